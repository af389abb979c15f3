//! A Piper voice's ONNX Runtime sessions: the graph whole or cut at the vocoder (and the flow cut
//! out, so it runs span by span), the probe run that learns the noise shapes and the hop, and the
//! runs themselves (the front, the flow's spans, the decoder's chunks).

use super::{PiperVoice, gaussian};
use crate::phonemize::PhonToken;
use crate::tts::TtsError;
use crate::tts::timing;
use ort::session::Session;
use ort::value::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What the probe learned about one noise input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NoiseShape {
    pub(super) channels: usize,
    pub(super) per_frame: bool,
}

pub(super) fn rt(e: ort::Error) -> TtsError {
    TtsError::Runtime(e.to_string())
}

/// The sessions of a voice: the graph cut at the vocoder (so audio can be decoded in chunks), or whole.
pub(super) enum Sessions {
    Whole(Session),
    Split {
        front: Session,
        decoder: Session,
        latent: String,
        cond: Vec<String>,
        /// The flow cut out of the front (the front then ends at its input).
        flow: Option<Box<FlowSession>>,
    },
}

/// The flow on its own (see [`crate::tts::onnx::FlowSplit`]).
pub(super) struct FlowSession {
    pub(super) session: Session,
    pub(super) prior: String,
    pub(super) mask: String,
    pub(super) reach: usize,
}

/// What the front of the graph gives for a clause.
pub(super) struct Front {
    pub(super) frames: Vec<u64>,
    pub(super) noise_shapes: Vec<Vec<i64>>,
    pub(super) body: FrontBody,
}

pub(super) enum FrontBody {
    Latent {
        /// `[channels, frames]`; only `valid` holds latent frames when `prior` is kept.
        data: Vec<f32>,
        channels: usize,
        frames: usize,
        /// The flow's input `[channels, frames]`, when the flow runs span by span.
        prior: Option<Vec<f32>>,
        valid: (usize, usize),
    },
    Audio(Vec<f32>),
}

impl Front {
    pub(super) fn total_frames(&self) -> usize {
        match &self.body {
            FrontBody::Latent { frames, .. } => *frames,
            FrontBody::Audio(_) => self.frames.iter().sum::<u64>() as usize,
        }
    }
}

impl PiperVoice {
    /// Learn the noise shapes and the hop from one tiny run (this also warms the session up).
    pub(super) fn probe(&mut self) -> Result<(), TtsError> {
        // Two lengths, in case one run's frame count happens to equal its id count.
        for ipa in ["ˈa", "ˈaɪ ˈaɪ ˈaɪ"] {
            let token = PhonToken::Word {
                text: "a".into(),
                ipa: ipa.into(),
            };
            let enc = timing::encode(&[token], &self.id_map);
            let n = enc.ids.len() as i64;
            let big: Vec<(usize, usize)> =
                self.edits.noise_inputs.iter().map(|_| (512, 512)).collect();
            let mut front = self.run_front(
                &enc.ids,
                &big,
                &mut ChaCha8Rng::seed_from_u64(0),
                [0.0, 1.0, 0.0],
            )?;
            let frames: u64 = front.frames.iter().sum();
            let total = front.total_frames();
            let pcm = self.decode(&mut front, 0, total, 0)?;
            if frames == 0 || !(pcm.len() as u64).is_multiple_of(frames) {
                return Err(TtsError::Runtime(format!(
                    "the audio ({} samples) is not a whole number of duration frames ({frames})",
                    pcm.len()
                )));
            }
            if frames as i64 == n {
                continue;
            }
            let mut noise = Vec::new();
            for shape in &front.noise_shapes {
                let [_, c, t] = shape[..] else {
                    return Err(TtsError::Runtime(format!(
                        "noise of rank {} (expected 3)",
                        shape.len()
                    )));
                };
                if t != n && t != frames as i64 {
                    return Err(TtsError::Runtime(format!(
                        "noise length {t} follows neither the ids ({n}) nor the frames ({frames})"
                    )));
                }
                noise.push(NoiseShape {
                    channels: c as usize,
                    per_frame: t != n,
                });
            }
            self.hop = pcm.len() as u64 / frames;
            self.noise = noise;
            return Ok(());
        }
        Err(TtsError::Runtime(
            "could not tell the noise inputs apart".into(),
        ))
    }

    pub(super) fn common_inputs(
        &self,
        ids: &[i64],
        noise_dims: &[(usize, usize)],
        rng: &mut ChaCha8Rng,
        scales: [f32; 3],
    ) -> Result<Vec<(String, ort::session::SessionInputValue<'static>)>, TtsError> {
        let n = ids.len();
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                "input".into(),
                Tensor::from_array(([1usize, n], ids.to_vec()))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "input_lengths".into(),
                Tensor::from_array(([1usize], vec![n as i64]))
                    .map_err(rt)?
                    .into(),
            ),
            (
                "scales".into(),
                Tensor::from_array(([3usize], scales.to_vec()))
                    .map_err(rt)?
                    .into(),
            ),
        ];
        if self.has_sid {
            inputs.push(("sid".into(), self.sid_tensor()?));
        }
        for (name, &(c, t)) in self.edits.noise_inputs.iter().zip(noise_dims) {
            let noise = Tensor::from_array(([1usize, c, t], gaussian(rng, c, t))).map_err(rt)?;
            inputs.push((name.clone(), noise.into()));
        }
        Ok(inputs)
    }

    pub(super) fn sid_tensor(&self) -> Result<ort::session::SessionInputValue<'static>, TtsError> {
        let sid = self.sid.unwrap_or(0);
        Ok(Tensor::from_array(([1usize], vec![sid]))
            .map_err(rt)?
            .into())
    }

    /// The front of the graph: durations, noise shapes, and the latent (or, for a graph that could not
    /// be split, the audio).
    pub(super) fn run_front(
        &mut self,
        ids: &[i64],
        noise_dims: &[(usize, usize)],
        rng: &mut ChaCha8Rng,
        scales: [f32; 3],
    ) -> Result<Front, TtsError> {
        let inputs = self.common_inputs(ids, noise_dims, rng, scales)?;
        let durations = self.edits.durations.clone();
        let shapes = self.edits.noise_shapes.clone();
        let (session, latent_name, lazy) = match &mut self.sessions {
            Sessions::Whole(s) => (s, None, false),
            Sessions::Split {
                front,
                latent,
                flow,
                ..
            } => match flow {
                // the front ends at the flow's input: the latent is made span by span in `decode`
                Some(f) => (front, Some(f.prior.clone()), true),
                None => (front, Some(latent.clone()), false),
            },
        };
        let outputs = session.run(inputs).map_err(rt)?;
        let frames = outputs[durations.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(rt)?
            .1
            .iter()
            .map(|d| d.max(0.0).round() as u64)
            .collect();
        let mut noise_shapes = Vec::new();
        for name in &shapes {
            let (_, s) = outputs[name.as_str()]
                .try_extract_tensor::<i64>()
                .map_err(rt)?;
            noise_shapes.push(s.to_vec());
        }
        let body = match latent_name {
            None => FrontBody::Audio(
                outputs["output"]
                    .try_extract_tensor::<f32>()
                    .map_err(rt)?
                    .1
                    .to_vec(),
            ),
            Some(name) => {
                let (shape, data) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(rt)?;
                let [_, c, t] = shape[..] else {
                    return Err(TtsError::Runtime(format!(
                        "latent of rank {} (expected 3)",
                        shape.len()
                    )));
                };
                let (c, t) = (c as usize, t as usize);
                // a flow input: no latent frame is known yet
                let (data, prior, valid) = if lazy {
                    (vec![0.0; c * t], Some(data.to_vec()), (0, 0))
                } else {
                    (data.to_vec(), None, (0, t))
                };
                FrontBody::Latent {
                    data,
                    channels: c,
                    frames: t,
                    prior,
                    valid,
                }
            }
        };
        Ok(Front {
            frames,
            noise_shapes,
            body,
        })
    }

    /// Audio for latent frames `from..to`, decoded with up to `context` frames either side (so the
    /// chunk's edges sound as they do inside a whole-clause decode) and trimmed to the span.
    pub(super) fn decode(
        &mut self,
        front: &mut Front,
        from: usize,
        to: usize,
        context: usize,
    ) -> Result<Vec<f32>, TtsError> {
        if let FrontBody::Latent { frames, valid, .. } = &front.body {
            let to = to.min(*frames);
            let (start, end) = (from.saturating_sub(context), (to + context).min(*frames));
            if from < to && (start < valid.0 || end > valid.1) {
                self.flow_span(front, start, end)?;
            }
        }
        let sid = self.sid.unwrap_or(0);
        let hop = self.hop.max(1) as usize;
        match (&front.body, &mut self.sessions) {
            (FrontBody::Audio(pcm), _) => {
                let (a, b) = if self.hop == 0 {
                    (0, pcm.len())
                } else {
                    (from * hop, (to * hop).min(pcm.len()))
                };
                Ok(pcm[a.min(b)..b].to_vec())
            }
            (
                FrontBody::Latent {
                    data,
                    channels,
                    frames,
                    ..
                },
                Sessions::Split {
                    decoder,
                    latent,
                    cond,
                    ..
                },
            ) => {
                let (c, t) = (*channels, *frames);
                let to = to.min(t);
                if from >= to {
                    return Ok(Vec::new());
                }
                let start = from.saturating_sub(context);
                let end = (to + context).min(t);
                let w = end - start;
                let mut chunk = Vec::with_capacity(c * w);
                for ch in 0..c {
                    chunk.extend_from_slice(&data[ch * t + start..ch * t + end]);
                }
                let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![(
                    latent.clone(),
                    Tensor::from_array(([1usize, c, w], chunk))
                        .map_err(rt)?
                        .into(),
                )];
                for name in cond.iter() {
                    if name != "sid" {
                        return Err(TtsError::Runtime(format!(
                            "the decoder needs {name:?}, which idol does not feed"
                        )));
                    }
                    inputs.push((
                        name.clone(),
                        Tensor::from_array(([1usize], vec![sid]))
                            .map_err(rt)?
                            .into(),
                    ));
                }
                let outputs = decoder.run(inputs).map_err(rt)?;
                let pcm = outputs["output"].try_extract_tensor::<f32>().map_err(rt)?.1;
                let hop = if self.hop == 0 {
                    pcm.len() / w.max(1)
                } else {
                    hop
                };
                let a = (from - start) * hop;
                let b = ((to - start) * hop).min(pcm.len());
                Ok(pcm[a.min(b)..b].to_vec())
            }
            (FrontBody::Latent { .. }, Sessions::Whole(_)) => Err(TtsError::Runtime(
                "latent from a whole-graph session".into(),
            )),
        }
    }

    /// Run the flow so the latent frames `start..end` are known: with the flow's reach of context on
    /// either side (its output there equals the whole-clause flow's). A span from the clause start (a
    /// first chunk) gets just what it needs; any later span gets everything to the clause's end at
    /// once, so a clause runs the flow at most twice.
    pub(super) fn flow_span(
        &mut self,
        front: &mut Front,
        start: usize,
        end: usize,
    ) -> Result<(), TtsError> {
        let FrontBody::Latent {
            data,
            channels,
            frames,
            prior: Some(prior),
            valid,
        } = &mut front.body
        else {
            return Ok(());
        };
        let Sessions::Split {
            flow: Some(flow), ..
        } = &mut self.sessions
        else {
            return Err(TtsError::Runtime(
                "the voice has no flow session for a flow input".into(),
            ));
        };
        let (c, t, reach) = (*channels, *frames, flow.reach);
        let a = start.saturating_sub(reach);
        let b = if start == 0 { (end + reach).min(t) } else { t };
        let w = b - a;
        let mut window = Vec::with_capacity(c * w);
        for ch in 0..c {
            window.extend_from_slice(&prior[ch * t + a..ch * t + b]);
        }
        let inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                flow.prior.clone(),
                Tensor::from_array(([1usize, c, w], window))
                    .map_err(rt)?
                    .into(),
            ),
            (
                flow.mask.clone(),
                Tensor::from_array(([1usize, 1, w], vec![1f32; w]))
                    .map_err(rt)?
                    .into(),
            ),
        ];
        let outputs = flow.session.run(inputs).map_err(rt)?;
        let (shape, z) = outputs[0].try_extract_tensor::<f32>().map_err(rt)?;
        if shape.len() != 3 || shape[1] as usize != c || shape[2] as usize != w {
            return Err(TtsError::Runtime(format!(
                "the flow gave a latent of shape {shape:?} for [1, {c}, {w}]"
            )));
        }
        let lo = if a == 0 { 0 } else { a + reach };
        let hi = if b == t { t } else { b - reach };
        for ch in 0..c {
            data[ch * t + lo..ch * t + hi].copy_from_slice(&z[ch * w + lo - a..ch * w + hi - a]);
        }
        *valid = (lo, hi);
        Ok(())
    }
}

//! Live Link Face sender: the UDP packets Epic's Live Link Face iPhone app sends to Unreal Engine, so
//! Unreal's Live Link lists idol as a face source (subject `idol` by default) and a MetaHuman or any
//! ARKit-driven Anim Blueprint follows her face.
//!
//! Input: frames of a rig with the 52 ARKit channels (`arkit52`; names matched case-insensitively),
//! their head rotation and gaze. Output: at the configured rate (60 Hz by default, resampled by
//! sample stamps, see [`Resampler`]), one datagram per tick to `[sinks.livelink] addr`
//! (`127.0.0.1:11111`, the port Unreal's Live Link Face source listens on). All numbers big-endian:
//!
//! | field | bytes |
//! |---|---|
//! | packet version, `6` | u8 |
//! | device id: length, then UTF-8 | i32 + n |
//! | subject name: length, then UTF-8 | i32 + n |
//! | frame time: frame number, sub-frame (0..1), rate numerator, rate denominator | i32, f32, i32, i32 |
//! | value count, `61` | u8 |
//! | values in Unreal's `EARFaceBlendShape` order ([`VALUE_NAMES`]) | 61 × f32 |
//!
//! The values are the 52 blend shapes (0..1; note `JawLeft` before `JawRight` and `MouthLeft` before
//! `MouthRight`, unlike the app's CSV recordings), then `HeadYaw`, `HeadPitch`, `HeadRoll` and each
//! eye's yaw, pitch, roll, in radians (yaw + to the character's left, pitch + up, as idol's Live Link
//! Face CSV writes them). The frame time is the tick's position on the session timeline at the
//! sink's rate (`rate/1`).
//!
//! Threading: a [`LiveLinkSink`] is `Send`, sends with a std `UdpSocket` from the caller's thread.

use super::{FrameSink, Resampler, SinkError};
use crate::face::FrameRef;
use glam::EulerRot;
use std::net::{SocketAddr, UdpSocket};

/// The packet version the Live Link Face app sends.
pub const PACKET_VERSION: u8 = 6;

/// The 61 values of a packet, in Unreal's `EARFaceBlendShape` order.
pub const VALUE_NAMES: [&str; 61] = [
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawRight",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthLeft",
    "mouthRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
    "headYaw",
    "headPitch",
    "headRoll",
    "leftEyeYaw",
    "leftEyePitch",
    "leftEyeRoll",
    "rightEyeYaw",
    "rightEyePitch",
    "rightEyeRoll",
];

/// Settings of a [`LiveLinkSink`].
#[derive(Debug, Clone)]
pub struct LiveLinkOptions {
    /// Where Unreal listens (default 127.0.0.1:11111).
    pub addr: SocketAddr,
    /// The subject name Unreal lists (default `idol`).
    pub subject: String,
    /// The device id sent with each packet.
    pub device_id: String,
    /// Ticks per second (default 60).
    pub rate: u32,
    /// The session timeline's sample rate.
    pub sample_rate: u32,
}

impl LiveLinkOptions {
    pub fn from_config(c: &crate::config::LiveLinkConfig, sample_rate: u32) -> LiveLinkOptions {
        LiveLinkOptions {
            addr: c.addr,
            subject: c.subject.clone(),
            device_id: format!("idol-{}", c.subject),
            rate: c.rate,
            sample_rate,
        }
    }
}

/// Sends frames as Live Link Face packets; see the module docs for the layout.
pub struct LiveLinkSink {
    socket: UdpSocket,
    opts: LiveLinkOptions,
    resampler: Option<Resampler>,
    channels: Vec<String>,
    /// For each of the 52 blend shapes, the channel index in `channels`.
    index: Vec<Option<usize>>,
    ticks: u64,
    buf: Vec<u8>,
    err: Option<SinkError>,
}

impl LiveLinkSink {
    /// Bind an ephemeral local UDP port and aim at `opts.addr`.
    pub fn new(opts: LiveLinkOptions) -> Result<LiveLinkSink, SinkError> {
        let local: SocketAddr = if opts.addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).map_err(|e| SinkError::Net {
            target: opts.addr.to_string(),
            error: e,
        })?;
        let resampler = Resampler::new(opts.sample_rate, opts.rate)?;
        Ok(LiveLinkSink {
            socket,
            opts,
            resampler: Some(resampler),
            channels: Vec::new(),
            index: Vec::new(),
            ticks: 0,
            buf: Vec::with_capacity(400),
            err: None,
        })
    }

    /// Ticks sent so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The packet of one tick (see the module docs), into `out`.
    pub fn packet(&self, f: &FrameRef<'_>, out: &mut Vec<u8>) {
        out.clear();
        out.push(PACKET_VERSION);
        for s in [&self.opts.device_id, &self.opts.subject] {
            out.extend_from_slice(&(s.len() as i32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let ticks = f.at.get() as f64 * self.opts.rate as f64 / self.opts.sample_rate as f64;
        let frame = ticks.floor();
        out.extend_from_slice(&(frame as i32).to_be_bytes());
        out.extend_from_slice(&((ticks - frame) as f32).to_be_bytes());
        out.extend_from_slice(&(self.opts.rate as i32).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        out.push(VALUE_NAMES.len() as u8);
        for i in &self.index {
            let v = i.map_or(0.0, |i| f.weights[i]);
            out.extend_from_slice(&v.to_be_bytes());
        }
        let (yaw, mpitch, roll) = f.head.to_euler(EulerRot::YXZ);
        for v in [yaw, -mpitch, roll] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for g in f.gaze {
            for v in [g.yaw, g.pitch, 0.0] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    fn send_tick(&mut self, f: &FrameRef<'_>) -> Result<(), SinkError> {
        let mut buf = std::mem::take(&mut self.buf);
        self.packet(f, &mut buf);
        let r = self.socket.send_to(&buf, self.opts.addr);
        self.buf = buf;
        match r {
            Ok(_) => {}
            // Nobody listening yet: the receiver picks up when Unreal starts.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                return Err(SinkError::Net {
                    target: self.opts.addr.to_string(),
                    error: e,
                });
            }
        }
        self.ticks += 1;
        Ok(())
    }
}

impl FrameSink for LiveLinkSink {
    fn frame(&mut self, channels: &[String], frame: &FrameRef<'_>) -> Result<(), SinkError> {
        if channels.len() != frame.weights.len() {
            return Err(SinkError::Channels {
                expected: channels.len(),
                got: frame.weights.len(),
            });
        }
        if self.channels.as_slice() != channels {
            self.channels = channels.to_vec();
            self.index = VALUE_NAMES[..52]
                .iter()
                .map(|n| channels.iter().position(|c| c.eq_ignore_ascii_case(n)))
                .collect();
            if let Some(r) = &mut self.resampler {
                r.reset();
            }
        }
        let mut resampler = self
            .resampler
            .take()
            .expect("resampler present between calls");
        resampler.push(frame, |t| {
            if self.err.is_none()
                && let Err(e) = self.send_tick(t)
            {
                self.err = Some(e);
            }
        });
        self.resampler = Some(resampler);
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_names_are_the_canonical_arkit_names_and_head_eye_curves() {
        let mut sorted: Vec<&str> = VALUE_NAMES[..52].to_vec();
        sorted.sort_unstable();
        let mut canon: Vec<&str> = crate::face::canon::ARKIT.to_vec();
        canon.sort_unstable();
        assert_eq!(sorted, canon);
        assert_eq!(VALUE_NAMES[15], "jawLeft");
        assert_eq!(VALUE_NAMES[17], "jawOpen");
        assert_eq!(VALUE_NAMES[52], "headYaw");
    }
}

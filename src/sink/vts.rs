//! VTube Studio Public API plugin: drives a Live2D model in VTube Studio through parameter injection.
//!
//! Input: frames of the live2d or arkit52 rig (the vrm rig works too, more coarsely), mapped to VTube
//! Studio's default input parameters ([`map_params`]: `FaceAngleX/Y/Z` from the head rotation,
//! `EyeLeftX/Y`, `EyeRightX/Y` from the gaze, `EyeOpenLeft/Right`, `MouthOpen`, `MouthSmile`,
//! `BrowLeftY`, `BrowRightY`, `Brows`, and `CheekPuff`/`TongueOut` where the rig has them). "Left"
//! is the character's left. Output: `InjectParameterDataRequest`s over a WebSocket
//! (`ws://localhost:8001` by default), every message in the API's envelope
//! `{"apiName":"VTubeStudioPublicAPI","apiVersion":"1.0","requestID":…,"messageType":…,"data":{…}}`.
//!
//! Protocol, per connection: with a stored token, `AuthenticationRequest` {pluginName,
//! pluginDeveloper, authenticationToken}; without one, or when VTube Studio answers
//! `authenticated: false` (the user revoked the plugin), `AuthenticationTokenRequest` (VTube Studio
//! shows the user an allow/deny popup), the token from `AuthenticationTokenResponse` is written to
//! the token file atomically (a temporary file renamed over it) and then used to authenticate. Then
//! injections with `faceFound: true`, `mode: "set"` and `parameterValues: [{id, value}]`.
//!
//! Rate: at most `rate` injections per second (30 by default; VTube Studio is reported to drop frames
//! when fed every 16 ms). The latest values are sent when they changed; unchanged values are re-sent
//! every [`VtsOptions::keepalive`] (300 ms), because VTube Studio hands a parameter back to face
//! tracking when nothing was injected for about a second, so the model holds still while the idol
//! is idle. When VTube Studio closes or restarts, the plugin reconnects with exponential backoff
//! (0.5 s doubling to 10 s) and authenticates again with the stored token.
//!
//! Hotkeys and expressions: `[sinks.vtube_studio.hotkeys]` maps emotion and action names to the
//! model's hotkeys (name or id); when the gate releases a cue (at its sample, by the audio clock),
//! a `HotkeyTriggerRequest` {hotkeyID} goes out. `[sinks.vtube_studio.expressions]` maps emotions to
//! expression files: the mood's expression is activated with `ExpressionActivationRequest`
//! {expressionFile, fadeTime, active: true} and deactivated (`active: false`) when the next emotion
//! cue comes (another mood, or `neutral`). Names are matched as the face matches them (lowercase,
//! `-` and spaces as `_`, and a catalogue alias such as `shake_head` finds an entry for `shake`).
//! Requests that come while VTube Studio is not connected are dropped (a late gesture is worse than
//! none), but the expression in force is activated again on the next connection.
//!
//! Threading: [`VtsSink::spawn`] starts one tokio task that owns the connection; the [`VtsSink`]
//! handle (a [`FrameSink`]) only maps a frame and publishes the values on a `watch` channel, so the
//! gate thread never waits for the network. Dropping the handle ends the task.

use super::{FrameSink, SinkError};
use crate::face::{FrameRef, gesture};
use crate::speech::{Cue, CueKind};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// Settings of a [`VtsSink`].
#[derive(Debug, Clone)]
pub struct VtsOptions {
    /// VTube Studio's API address (default `ws://localhost:8001`).
    pub url: String,
    /// Injections per second at most (default 30).
    pub rate: u32,
    /// Where the authentication token is kept (absolute, or relative to the working directory).
    pub token_file: PathBuf,
    pub plugin_name: String,
    pub plugin_developer: String,
    /// Unchanged values are re-sent this often so VTube Studio does not take them back.
    pub keepalive: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Emotion or action name → hotkey name or id.
    pub hotkeys: BTreeMap<String, String>,
    /// Emotion name → expression file, active while the mood holds.
    pub expressions: BTreeMap<String, String>,
    /// Seconds an expression fades in and out (VTube Studio's `fadeTime`).
    pub expression_fade: f32,
}

impl VtsOptions {
    pub fn new(url: impl Into<String>, token_file: impl Into<PathBuf>) -> VtsOptions {
        VtsOptions {
            url: url.into(),
            rate: 30,
            token_file: token_file.into(),
            plugin_name: "idol".into(),
            plugin_developer: "idol project".into(),
            keepalive: Duration::from_millis(300),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            hotkeys: BTreeMap::new(),
            expressions: BTreeMap::new(),
            expression_fade: 0.5,
        }
    }

    /// From `[sinks.vtube_studio]`, with the token file resolved against the idol home.
    pub fn from_config(c: &crate::config::VtsConfig, home: &Path) -> VtsOptions {
        VtsOptions {
            rate: c.rate,
            hotkeys: c.hotkeys.clone(),
            expressions: c.expressions.clone(),
            ..VtsOptions::new(c.url.clone(), home.join(&c.token_file))
        }
    }
}

/// One injected parameter: a VTube Studio default parameter id and its value.
pub type Param = (&'static str, f32);

/// A request the sink sends besides injections.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// `HotkeyTriggerRequest` with this hotkey name or id.
    Hotkey(String),
    /// `ExpressionActivationRequest` for this expression file.
    Expression { file: String, active: bool },
}

/// Maps frames to VTube Studio's default parameters and hands them to the connection task; turns
/// cues into hotkey and expression requests.
pub struct VtsSink {
    tx: watch::Sender<Arc<Vec<Param>>>,
    triggers: mpsc::UnboundedSender<Trigger>,
    hotkeys: BTreeMap<String, String>,
    expressions: BTreeMap<String, String>,
    /// The expression file active for the mood in force.
    active: Option<String>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The entry of `map` for a cue name: the name as the face normalizes it, else its catalogue name.
fn lookup<'a>(map: &'a BTreeMap<String, String>, kind: CueKind, name: &str) -> Option<&'a String> {
    if map.is_empty() {
        return None;
    }
    let n = gesture::normalize(name);
    if let Some(v) = map.get(&n) {
        return Some(v);
    }
    let cat = gesture::Catalogue::builtin();
    let canonical = match kind {
        CueKind::Emotion => cat.emotion(name).map(|i| &cat.emotions[i].name),
        CueKind::Action => cat.action(name).map(|i| &cat.actions[i].name),
    }?;
    map.get(canonical).or_else(|| {
        // An entry written with an alias of the cue's gesture (`shake_head` for `shake`).
        let aliases = match kind {
            CueKind::Emotion => &cat.emotions[cat.emotion(name)?].aliases,
            CueKind::Action => &cat.actions[cat.action(name)?].aliases,
        };
        aliases.iter().find_map(|a| map.get(a))
    })
}

impl VtsSink {
    /// Start the connection task on `rt`.
    pub fn spawn(opts: VtsOptions, rt: &tokio::runtime::Handle) -> VtsSink {
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        let (triggers, trx) = mpsc::unbounded_channel();
        let norm = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (gesture::normalize(k), v.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let hotkeys = norm(&opts.hotkeys);
        let expressions = norm(&opts.expressions);
        let task = rt.spawn(run(opts, rx, trx));
        VtsSink {
            tx,
            triggers,
            hotkeys,
            expressions,
            active: None,
            task: Some(task),
        }
    }

    /// The requests a cue asks for, in sending order (updates the expression in force).
    pub fn triggers_for(&mut self, cue: &Cue) -> Vec<Trigger> {
        let mut out = Vec::new();
        if cue.kind == CueKind::Emotion {
            let want = lookup(&self.expressions, cue.kind, &cue.name).cloned();
            if want != self.active {
                if let Some(old) = self.active.take() {
                    out.push(Trigger::Expression {
                        file: old,
                        active: false,
                    });
                }
                if let Some(new) = want {
                    out.push(Trigger::Expression {
                        file: new.clone(),
                        active: true,
                    });
                    self.active = Some(new);
                }
            }
        }
        if let Some(h) = lookup(&self.hotkeys, cue.kind, &cue.name) {
            out.push(Trigger::Hotkey(h.clone()));
        }
        out
    }

    /// Publish values directly (already mapped).
    pub fn set(&self, params: Vec<Param>) {
        self.tx.send_replace(Arc::new(params));
    }
}

impl Drop for VtsSink {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl FrameSink for VtsSink {
    fn frame(&mut self, channels: &[String], frame: &FrameRef<'_>) -> Result<(), SinkError> {
        if channels.len() != frame.weights.len() {
            return Err(SinkError::Channels {
                expected: channels.len(),
                got: frame.weights.len(),
            });
        }
        self.set(map_params(channels, frame));
        Ok(())
    }

    fn cue(&mut self, cue: &Cue) -> Result<(), SinkError> {
        for t in self.triggers_for(cue) {
            self.triggers.send(t).map_err(|_| SinkError::Closed)?;
        }
        Ok(())
    }
}

/// Frame → VTube Studio default parameters (ranges as VTube Studio's tracking delivers them: angles
/// in degrees, eye openness, mouth and brows 0..1 with 0.5 neutral for smile and brows, eye
/// positions -1..1).
pub fn map_params(channels: &[String], f: &FrameRef<'_>) -> Vec<Param> {
    let get = |name: &str| {
        channels
            .iter()
            .position(|c| c == name)
            .map(|i| f.weights[i])
    };
    let mut out: Vec<Param> = Vec::with_capacity(16);
    let (yaw, x, roll) = f.head.to_euler(glam::EulerRot::YXZ);
    out.push(("FaceAngleX", yaw.to_degrees()));
    out.push(("FaceAngleY", -x.to_degrees()));
    out.push(("FaceAngleZ", -roll.to_degrees()));
    let ex = |y: f32| (y / 0.52).clamp(-1.0, 1.0);
    let ey = |p: f32| (p / 0.44).clamp(-1.0, 1.0);
    out.push(("EyeLeftX", ex(f.gaze[0].yaw)));
    out.push(("EyeLeftY", ey(f.gaze[0].pitch)));
    out.push(("EyeRightX", ex(f.gaze[1].yaw)));
    out.push(("EyeRightY", ey(f.gaze[1].pitch)));
    let half = |v: f32| ((v + 1.0) * 0.5).clamp(0.0, 1.0);
    let unit = |v: f32| v.clamp(0.0, 1.0);
    if let Some(mouth) = get("ParamMouthOpenY") {
        // live2d
        out.push(("MouthOpen", unit(mouth)));
        out.push(("MouthSmile", half(get("ParamMouthForm").unwrap_or(0.0))));
        out.push(("EyeOpenLeft", unit(get("ParamEyeLOpen").unwrap_or(1.0))));
        out.push(("EyeOpenRight", unit(get("ParamEyeROpen").unwrap_or(1.0))));
        let (bl, br) = (
            half(get("ParamBrowLY").unwrap_or(0.0)),
            half(get("ParamBrowRY").unwrap_or(0.0)),
        );
        out.push(("BrowLeftY", bl));
        out.push(("BrowRightY", br));
        out.push(("Brows", (bl + br) * 0.5));
    } else if let Some(jaw) = get("jawOpen") {
        // arkit52
        let g = |n: &str| get(n).unwrap_or(0.0);
        out.push(("MouthOpen", unit(jaw - 0.5 * g("mouthClose"))));
        let smile = 0.5 * (g("mouthSmileLeft") + g("mouthSmileRight"));
        let frown = 0.5 * (g("mouthFrownLeft") + g("mouthFrownRight"));
        out.push(("MouthSmile", half(smile - frown)));
        out.push((
            "EyeOpenLeft",
            unit(1.0 - g("eyeBlinkLeft") + 0.2 * g("eyeWideLeft")),
        ));
        out.push((
            "EyeOpenRight",
            unit(1.0 - g("eyeBlinkRight") + 0.2 * g("eyeWideRight")),
        ));
        let inner = g("browInnerUp");
        let bl = half(0.5 * (inner + g("browOuterUpLeft")) - g("browDownLeft"));
        let br = half(0.5 * (inner + g("browOuterUpRight")) - g("browDownRight"));
        out.push(("BrowLeftY", bl));
        out.push(("BrowRightY", br));
        out.push(("Brows", (bl + br) * 0.5));
        out.push(("CheekPuff", unit(g("cheekPuff"))));
        out.push(("TongueOut", unit(g("tongueOut"))));
    } else if get("aa").is_some() {
        // vrm
        let g = |n: &str| get(n).unwrap_or(0.0);
        let open = g("aa")
            .max(0.8 * g("oh"))
            .max(0.6 * g("ee"))
            .max(0.5 * g("ou"))
            .max(0.4 * g("ih"));
        out.push(("MouthOpen", unit(open)));
        out.push((
            "MouthSmile",
            half(g("happy") + 0.5 * g("relaxed") - g("sad") - 0.5 * g("angry")),
        ));
        let blink = g("blink");
        out.push(("EyeOpenLeft", unit(1.0 - blink.max(g("blinkLeft")))));
        out.push(("EyeOpenRight", unit(1.0 - blink.max(g("blinkRight")))));
        let brows = half(g("surprised") - g("angry") - 0.5 * g("sad"));
        out.push(("BrowLeftY", brows));
        out.push(("BrowRightY", brows));
        out.push(("Brows", brows));
    }
    out
}

fn envelope(id: u64, kind: &str, data: Value) -> String {
    json!({
        "apiName": "VTubeStudioPublicAPI",
        "apiVersion": "1.0",
        "requestID": format!("idol-{id}"),
        "messageType": kind,
        "data": data,
    })
    .to_string()
}

/// Write `token` to `path` atomically: a temporary file in the same folder, renamed over it.
pub fn store_token(path: &Path, token: &str) -> Result<(), SinkError> {
    let err = |e| SinkError::TokenFile {
        path: path.to_path_buf(),
        error: e,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, token).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn load_token(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[derive(Debug)]
enum SessionEnd {
    /// The socket closed or failed: reconnect.
    Lost(String),
    /// The handle was dropped: stop.
    Stopped,
}

async fn run(
    opts: VtsOptions,
    rx: watch::Receiver<Arc<Vec<Param>>>,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
) {
    let mut backoff = opts.backoff_min;
    let mut next_id = 0u64;
    let mut active: Option<String> = None;
    loop {
        match tokio_tungstenite::connect_async(opts.url.as_str()).await {
            Ok((ws, _)) => {
                log::info!("vtube studio: connected to {}", opts.url);
                backoff = opts.backoff_min;
                // Requests made while disconnected are stale: drop them, keeping the mood's expression.
                while let Ok(t) = triggers.try_recv() {
                    note_expression(&mut active, &t);
                }
                match session(
                    &opts,
                    ws,
                    rx.clone(),
                    &mut triggers,
                    &mut active,
                    &mut next_id,
                )
                .await
                {
                    SessionEnd::Stopped => return,
                    SessionEnd::Lost(why) => {
                        log::warn!("vtube studio: connection lost ({why}); reconnecting")
                    }
                }
            }
            Err(e) => log::debug!("vtube studio: cannot connect to {}: {e}", opts.url),
        }
        if rx.has_changed().is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Send a request and wait for the message answering it.
async fn request(
    ws: &mut Ws,
    next_id: &mut u64,
    kind: &str,
    data: Value,
) -> Result<(String, Value), String> {
    *next_id += 1;
    let id = format!("idol-{}", *next_id);
    ws.send(Message::text(envelope(*next_id, kind, data)))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let m = ws
            .next()
            .await
            .ok_or_else(|| "closed".to_string())?
            .map_err(|e| e.to_string())?;
        let Message::Text(t) = m else {
            if let Message::Close(_) = m {
                return Err("closed by VTube Studio".into());
            }
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
        if v["requestID"].as_str() == Some(id.as_str()) {
            let kind = v["messageType"].as_str().unwrap_or_default().to_string();
            return Ok((kind, v["data"].clone()));
        }
    }
}

async fn authenticate(opts: &VtsOptions, ws: &mut Ws, next_id: &mut u64) -> Result<(), String> {
    let mut token = load_token(&opts.token_file);
    for _ in 0..2 {
        let t = match token.take() {
            Some(t) => t,
            None => {
                let (kind, data) = request(
                    ws,
                    next_id,
                    "AuthenticationTokenRequest",
                    json!({"pluginName": opts.plugin_name, "pluginDeveloper": opts.plugin_developer}),
                )
                .await?;
                let Some(t) = data["authenticationToken"]
                    .as_str()
                    .filter(|_| kind == "AuthenticationTokenResponse")
                else {
                    return Err(format!(
                        "VTube Studio did not grant a token ({kind}: {}); allow the plugin \"{}\" in VTube Studio",
                        data["message"].as_str().unwrap_or(""),
                        opts.plugin_name
                    ));
                };
                store_token(&opts.token_file, t).map_err(|e| e.to_string())?;
                t.to_string()
            }
        };
        let (_, data) = request(
            ws,
            next_id,
            "AuthenticationRequest",
            json!({"pluginName": opts.plugin_name, "pluginDeveloper": opts.plugin_developer, "authenticationToken": t}),
        )
        .await?;
        if data["authenticated"].as_bool() == Some(true) {
            return Ok(());
        }
        log::warn!(
            "vtube studio: the stored token was refused ({}); asking for a new one",
            data["reason"].as_str().unwrap_or("no reason given")
        );
    }
    Err("VTube Studio refused a fresh token".into())
}

/// Track the expression in force from the requests.
fn note_expression(active: &mut Option<String>, t: &Trigger) {
    if let Trigger::Expression { file, active: on } = t {
        if *on {
            *active = Some(file.clone());
        } else if active.as_ref() == Some(file) {
            *active = None;
        }
    }
}

/// The API message of a trigger.
pub fn trigger_message(id: u64, t: &Trigger, fade: f32) -> String {
    match t {
        Trigger::Hotkey(h) => envelope(id, "HotkeyTriggerRequest", json!({"hotkeyID": h})),
        Trigger::Expression { file, active } => envelope(
            id,
            "ExpressionActivationRequest",
            json!({"expressionFile": file, "fadeTime": fade, "active": active}),
        ),
    }
}

async fn session(
    opts: &VtsOptions,
    mut ws: Ws,
    mut rx: watch::Receiver<Arc<Vec<Param>>>,
    triggers: &mut mpsc::UnboundedReceiver<Trigger>,
    active: &mut Option<String>,
    next_id: &mut u64,
) -> SessionEnd {
    if let Err(e) = authenticate(opts, &mut ws, next_id).await {
        return SessionEnd::Lost(e);
    }
    log::info!("vtube studio: authenticated as {:?}", opts.plugin_name);
    if let Some(file) = active.clone() {
        *next_id += 1;
        let t = Trigger::Expression { file, active: true };
        if let Err(e) = ws
            .send(Message::text(trigger_message(
                *next_id,
                &t,
                opts.expression_fade,
            )))
            .await
        {
            return SessionEnd::Lost(e.to_string());
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_sent = tokio::time::Instant::now();
    let mut fresh = true;
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match rx.has_changed() {
                    Err(_) => {
                        let _ = ws.close(None).await;
                        return SessionEnd::Stopped;
                    }
                    Ok(changed) => fresh |= changed,
                }
                let params = rx.borrow_and_update().clone();
                if params.is_empty() || !(fresh || last_sent.elapsed() >= opts.keepalive) {
                    continue;
                }
                *next_id += 1;
                let values: Vec<Value> = params.iter().map(|(id, v)| json!({"id": id, "value": v})).collect();
                let msg = envelope(*next_id, "InjectParameterDataRequest", json!({
                    "faceFound": true,
                    "mode": "set",
                    "parameterValues": values,
                }));
                if let Err(e) = ws.send(Message::text(msg)).await {
                    return SessionEnd::Lost(e.to_string());
                }
                last_sent = tokio::time::Instant::now();
                fresh = false;
            }
            t = triggers.recv() => {
                let Some(t) = t else {
                    let _ = ws.close(None).await;
                    return SessionEnd::Stopped;
                };
                note_expression(active, &t);
                *next_id += 1;
                if let Err(e) = ws.send(Message::text(trigger_message(*next_id, &t, opts.expression_fade))).await {
                    return SessionEnd::Lost(e.to_string());
                }
            }
            m = ws.next() => match m {
                None => return SessionEnd::Lost("closed".into()),
                Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                Some(Ok(Message::Close(_))) => return SessionEnd::Lost("closed by VTube Studio".into()),
                Some(Ok(Message::Text(t))) => {
                    if !warned && t.as_str().contains("\"APIError\"") {
                        warned = true;
                        log::warn!("vtube studio: a request was refused (a hotkey or expression name the model lacks?): {}", t.as_str());
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

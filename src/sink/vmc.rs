//! VMC protocol sender (a "Performer" in VMC terms): OSC over UDP to a receiver such as VSeeFace,
//! Warudo, VNyan, EVMC4U (Unity) or VMC4UE (Unreal), which listen on 39539 by default.
//!
//! Input: frames of any rig with their channel names (VRM-style or ARKit names are what receivers
//! know). Output: at the configured rate (60 Hz by default, resampled by sample stamps, see
//! [`Resampler`]), one group of OSC messages per tick:
//!
//! - `/VMC/Ext/OK (int)1` (a model is loaded and data follows),
//! - `/VMC/Ext/T (float)time`: the tick's position on the session timeline in seconds,
//! - `/VMC/Ext/Root/Pos (string)"root" p.xyz q.xyzw`: the root at the origin, unrotated,
//! - `/VMC/Ext/Bone/Pos (string)"Neck"|"Head" p.xyz q.xyzw`: local rotations, the head rotation split
//!   between the two bones (30 % neck, the rest head), positions zero,
//! - `/VMC/Ext/Blend/Val (string)name (float)value` per channel, then `/VMC/Ext/Blend/Apply`.
//!
//! The messages go in OSC bundles (timetag "immediately"), as VMC performers send them; a bundle is
//! kept under [`MAX_DATAGRAM`] bytes so it is not fragmented on an ordinary network, and
//! `/VMC/Ext/Blend/Apply` is always in the last bundle of a tick, after every value.
//!
//! Coordinates: our head rotation is a right-handed glam `Quat` with Y up, the face looking along +Z
//! and +X to the character's left. VMC carries Unity's left-handed frame: Y up, Z forward, +X to the
//! character's right (a VRM avatar faces +Z with normalized bones). The two differ by mirroring X, so
//! a rotation (x, y, z, w) becomes (x, -y, -z, w) and a position (x, y, z) becomes (-x, y, z)
//! ([`to_unity_quat`], [`to_unity_pos`]).
//!
//! Threading: a [`VmcSink`] is `Send`, sends with a std `UdpSocket` from the caller's thread (UDP sends
//! do not wait for the receiver). A tick builds its OSC messages afresh (a few kilobytes); the
//! datagram buffer is reused.

use super::{FrameSink, Resampler, SinkError};
use crate::face::FrameRef;
use glam::{Quat, Vec3};
use rosc::{OscBundle, OscMessage, OscPacket, OscTime, OscType};
use std::net::{SocketAddr, UdpSocket};

/// Largest datagram this sink sends (bytes): under the 1500-byte Ethernet MTU with IP/UDP headers.
pub const MAX_DATAGRAM: usize = 1400;

/// Share of the head rotation given to the neck bone.
const NECK_SHARE: f32 = 0.3;

/// How blend shape names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlendNames {
    /// The rig's channel names as they are (VRM 1.0 `aa`, `blink`, ...; ARKit `jawOpen`, ...).
    #[default]
    AsRig,
    /// VRM 0.x preset names for the VRM rig's channels (`A`, `Blink_L`, `Joy`, ...), which VRM 0.x
    /// receivers such as VSeeFace expect; other names pass unchanged.
    Vrm0,
}

/// VRM 1.0 expression name → VRM 0.x blend shape preset name.
pub fn vrm0_name(name: &str) -> &str {
    match name {
        "aa" => "A",
        "ih" => "I",
        "ou" => "U",
        "ee" => "E",
        "oh" => "O",
        "blink" => "Blink",
        "blinkLeft" => "Blink_L",
        "blinkRight" => "Blink_R",
        "happy" => "Joy",
        "angry" => "Angry",
        "sad" => "Sorrow",
        "relaxed" => "Fun",
        "surprised" => "Surprised",
        "neutral" => "Neutral",
        "lookUp" => "LookUp",
        "lookDown" => "LookDown",
        "lookLeft" => "LookLeft",
        "lookRight" => "LookRight",
        other => other,
    }
}

/// Our right-handed rotation as Unity's left-handed one (mirror X): (x, y, z, w) → (x, -y, -z, w).
pub fn to_unity_quat(q: Quat) -> Quat {
    Quat::from_xyzw(q.x, -q.y, -q.z, q.w)
}

/// Our right-handed position as Unity's left-handed one (mirror X): (x, y, z) → (-x, y, z).
pub fn to_unity_pos(p: Vec3) -> Vec3 {
    Vec3::new(-p.x, p.y, p.z)
}

/// Settings of a [`VmcSink`].
#[derive(Debug, Clone)]
pub struct VmcOptions {
    /// The receiver (default 127.0.0.1:39539).
    pub target: SocketAddr,
    /// Ticks per second (default 60).
    pub rate: u32,
    /// The session timeline's sample rate (e.g. 22050 for the default voice).
    pub sample_rate: u32,
    pub names: BlendNames,
}

impl VmcOptions {
    pub fn from_config(c: &crate::config::VmcConfig, sample_rate: u32) -> VmcOptions {
        VmcOptions {
            target: c.target,
            rate: c.rate,
            sample_rate,
            names: match c.names {
                crate::config::VmcNames::Vrm0 => BlendNames::Vrm0,
                crate::config::VmcNames::Vrm1 | crate::config::VmcNames::Arkit => BlendNames::AsRig,
            },
        }
    }
}

/// Sends frames to a VMC receiver; see the module docs for what goes out.
pub struct VmcSink {
    socket: UdpSocket,
    opts: VmcOptions,
    resampler: Option<Resampler>,
    channels: Vec<String>,
    ticks: u64,
    buf: Vec<u8>,
    err: Option<SinkError>,
}

impl VmcSink {
    /// Bind an ephemeral local UDP port and aim at `opts.target`.
    pub fn new(opts: VmcOptions) -> Result<VmcSink, SinkError> {
        let local: SocketAddr = if opts.target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).map_err(|e| SinkError::Net {
            target: opts.target.to_string(),
            error: e,
        })?;
        let resampler = Resampler::new(opts.sample_rate, opts.rate)?;
        Ok(VmcSink {
            socket,
            opts,
            resampler: Some(resampler),
            channels: Vec::new(),
            ticks: 0,
            buf: Vec::with_capacity(MAX_DATAGRAM * 2),
            err: None,
        })
    }

    /// Ticks sent so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    fn name<'a>(&self, n: &'a str) -> &'a str {
        match self.opts.names {
            BlendNames::AsRig => n,
            BlendNames::Vrm0 => vrm0_name(n),
        }
    }

    /// The OSC messages of one tick, in sending order.
    pub fn messages(&self, channels: &[String], f: &FrameRef<'_>) -> Vec<OscMessage> {
        let secs = f.at.as_secs_f64(self.opts.sample_rate) as f32;
        let neck = Quat::IDENTITY.slerp(f.head, NECK_SHARE);
        let head = neck.inverse() * f.head;
        let mut out = Vec::with_capacity(channels.len() + 6);
        out.push(msg("/VMC/Ext/OK", vec![OscType::Int(1)]));
        out.push(msg("/VMC/Ext/T", vec![OscType::Float(secs)]));
        out.push(msg(
            "/VMC/Ext/Root/Pos",
            pose("root", Vec3::ZERO, Quat::IDENTITY),
        ));
        out.push(msg("/VMC/Ext/Bone/Pos", pose("Neck", Vec3::ZERO, neck)));
        out.push(msg("/VMC/Ext/Bone/Pos", pose("Head", Vec3::ZERO, head)));
        for (c, &w) in channels.iter().zip(f.weights) {
            out.push(msg(
                "/VMC/Ext/Blend/Val",
                vec![OscType::String(self.name(c).to_string()), OscType::Float(w)],
            ));
        }
        out.push(msg("/VMC/Ext/Blend/Apply", vec![]));
        out
    }

    fn send_tick(&mut self, f: &FrameRef<'_>) -> Result<(), SinkError> {
        let msgs = self.messages(&self.channels, f);
        // Pack messages into bundles of at most MAX_DATAGRAM bytes (16 bytes of bundle header, then
        // a 4-byte size before each message).
        let mut bundle: Vec<OscPacket> = Vec::new();
        let mut size = 16;
        for m in msgs {
            let len = rosc::encoder::encode(&OscPacket::Message(m.clone()))
                .map_err(|e| SinkError::Osc(e.to_string()))?
                .len()
                + 4;
            if size + len > MAX_DATAGRAM && !bundle.is_empty() {
                self.send_bundle(std::mem::take(&mut bundle))?;
                size = 16;
            }
            size += len;
            bundle.push(OscPacket::Message(m));
        }
        if !bundle.is_empty() {
            self.send_bundle(bundle)?;
        }
        self.ticks += 1;
        Ok(())
    }

    fn send_bundle(&mut self, content: Vec<OscPacket>) -> Result<(), SinkError> {
        let packet = OscPacket::Bundle(OscBundle {
            timetag: OscTime {
                seconds: 0,
                fractional: 1,
            },
            content,
        });
        self.buf.clear();
        rosc::encoder::encode_into(&packet, &mut self.buf)
            .map_err(|e| SinkError::Osc(e.to_string()))?;
        match self.socket.send_to(&self.buf, self.opts.target) {
            Ok(_) => Ok(()),
            // Nobody listening yet (ICMP port unreachable on a connected path): not an error for a
            // fire-and-forget stream; the receiver picks up when it starts.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(SinkError::Net {
                target: self.opts.target.to_string(),
                error: e,
            }),
        }
    }
}

fn msg(addr: &str, args: Vec<OscType>) -> OscMessage {
    OscMessage {
        addr: addr.to_string(),
        args,
    }
}

fn pose(name: &str, p: Vec3, q: Quat) -> Vec<OscType> {
    let p = to_unity_pos(p);
    let q = to_unity_quat(q);
    vec![
        OscType::String(name.to_string()),
        OscType::Float(p.x),
        OscType::Float(p.y),
        OscType::Float(p.z),
        OscType::Float(q.x),
        OscType::Float(q.y),
        OscType::Float(q.z),
        OscType::Float(q.w),
    ]
}

impl FrameSink for VmcSink {
    fn frame(&mut self, channels: &[String], frame: &FrameRef<'_>) -> Result<(), SinkError> {
        if channels.len() != frame.weights.len() {
            return Err(SinkError::Channels {
                expected: channels.len(),
                got: frame.weights.len(),
            });
        }
        if self.channels.as_slice() != channels {
            self.channels = channels.to_vec();
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
    fn unity_conversion_mirrors_x() {
        // Yaw to the character's left is +Y in ours, -Y (counter-clockwise from above) in Unity.
        let yaw_left = Quat::from_rotation_y(0.3);
        let u = to_unity_quat(yaw_left);
        assert!((u.y + yaw_left.y).abs() < 1e-6 && u.w == yaw_left.w);
        // Our +Z forward stays forward; our +X (character's left) becomes Unity -X.
        assert_eq!(
            to_unity_pos(Vec3::new(1.0, 2.0, 3.0)),
            Vec3::new(-1.0, 2.0, 3.0)
        );
        // The conversion is a homomorphism: it commutes with composition.
        let a = Quat::from_euler(glam::EulerRot::YXZ, 0.2, -0.1, 0.05);
        let b = Quat::from_euler(glam::EulerRot::YXZ, -0.3, 0.2, 0.1);
        let lhs = to_unity_quat(a * b);
        let rhs = to_unity_quat(a) * to_unity_quat(b);
        assert!(lhs.abs_diff_eq(rhs, 1e-5));
    }
}

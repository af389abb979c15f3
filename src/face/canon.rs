//! The canonical channel space the solver writes into, before a rig renames and reshapes it.
//!
//! It is Apple's ARKit 52 blendshapes (in the order Live Link Face records them), then the
//! Oculus-15 viseme mix (`viseme_sil` ... `viseme_ou`), the five VRM emotion presets
//! (`emotion_happy` ...), and a few derived controls that 2D and VRM rigs need: head angles in degrees
//! (`headYaw` to the character's left, `headPitch` up, `headRoll` toward the character's right),
//! eye direction normalised to -1..1 (`eyeYaw`, `eyePitch`), `breath` 0..1, `mouthOpen` (lip
//! aperture 0..1), `mouthForm` (-1 frown .. 1 smile), `blink` (both lids, 0..1) and `speech` (how much
//! the mouth is talking, 0..1). Rig files map these names onto their own channels.

use super::phonetics::Viseme;

/// ARKit 52 names, in Live Link Face's CSV column order (Apple's `ARFaceAnchor.BlendShapeLocation`).
pub const ARKIT: [&str; 52] = [
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
    "jawRight",
    "jawLeft",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthRight",
    "mouthLeft",
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
];

/// Index of each ARKit channel in the canonical vector.
#[allow(non_upper_case_globals, dead_code)]
pub mod ak {
    pub const eyeBlinkLeft: usize = 0;
    pub const eyeLookDownLeft: usize = 1;
    pub const eyeLookInLeft: usize = 2;
    pub const eyeLookOutLeft: usize = 3;
    pub const eyeLookUpLeft: usize = 4;
    pub const eyeSquintLeft: usize = 5;
    pub const eyeWideLeft: usize = 6;
    pub const eyeBlinkRight: usize = 7;
    pub const eyeLookDownRight: usize = 8;
    pub const eyeLookInRight: usize = 9;
    pub const eyeLookOutRight: usize = 10;
    pub const eyeLookUpRight: usize = 11;
    pub const eyeSquintRight: usize = 12;
    pub const eyeWideRight: usize = 13;
    pub const jawForward: usize = 14;
    pub const jawRight: usize = 15;
    pub const jawLeft: usize = 16;
    pub const jawOpen: usize = 17;
    pub const mouthClose: usize = 18;
    pub const mouthFunnel: usize = 19;
    pub const mouthPucker: usize = 20;
    pub const mouthRight: usize = 21;
    pub const mouthLeft: usize = 22;
    pub const mouthSmileLeft: usize = 23;
    pub const mouthSmileRight: usize = 24;
    pub const mouthFrownLeft: usize = 25;
    pub const mouthFrownRight: usize = 26;
    pub const mouthDimpleLeft: usize = 27;
    pub const mouthDimpleRight: usize = 28;
    pub const mouthStretchLeft: usize = 29;
    pub const mouthStretchRight: usize = 30;
    pub const mouthRollLower: usize = 31;
    pub const mouthRollUpper: usize = 32;
    pub const mouthShrugLower: usize = 33;
    pub const mouthShrugUpper: usize = 34;
    pub const mouthPressLeft: usize = 35;
    pub const mouthPressRight: usize = 36;
    pub const mouthLowerDownLeft: usize = 37;
    pub const mouthLowerDownRight: usize = 38;
    pub const mouthUpperUpLeft: usize = 39;
    pub const mouthUpperUpRight: usize = 40;
    pub const browDownLeft: usize = 41;
    pub const browDownRight: usize = 42;
    pub const browInnerUp: usize = 43;
    pub const browOuterUpLeft: usize = 44;
    pub const browOuterUpRight: usize = 45;
    pub const cheekPuff: usize = 46;
    pub const cheekSquintLeft: usize = 47;
    pub const cheekSquintRight: usize = 48;
    pub const noseSneerLeft: usize = 49;
    pub const noseSneerRight: usize = 50;
    pub const tongueOut: usize = 51;
}

pub const VISEME_BASE: usize = 52;
pub const EMOTION_BASE: usize = VISEME_BASE + Viseme::COUNT;
/// The VRM emotion presets, in the order of [`EMOTION_BASE`]`..`.
pub const EMOTIONS: [&str; 5] = ["happy", "sad", "angry", "surprised", "relaxed"];
pub const EXTRA_BASE: usize = EMOTION_BASE + EMOTIONS.len();
pub const EXTRAS: [&str; 10] = [
    "headYaw",
    "headPitch",
    "headRoll",
    "eyeYaw",
    "eyePitch",
    "breath",
    "mouthOpen",
    "mouthForm",
    "blink",
    "speech",
];
pub const HEAD_YAW: usize = EXTRA_BASE;
pub const HEAD_PITCH: usize = EXTRA_BASE + 1;
pub const HEAD_ROLL: usize = EXTRA_BASE + 2;
pub const EYE_YAW: usize = EXTRA_BASE + 3;
pub const EYE_PITCH: usize = EXTRA_BASE + 4;
pub const BREATH: usize = EXTRA_BASE + 5;
pub const MOUTH_OPEN: usize = EXTRA_BASE + 6;
pub const MOUTH_FORM: usize = EXTRA_BASE + 7;
pub const BLINK: usize = EXTRA_BASE + 8;
pub const SPEECH: usize = EXTRA_BASE + 9;
/// Length of the canonical vector.
pub const COUNT: usize = EXTRA_BASE + EXTRAS.len();

/// The name of canonical channel `i`.
pub fn name(i: usize) -> String {
    if i < VISEME_BASE {
        ARKIT[i].to_string()
    } else if i < EMOTION_BASE {
        format!("viseme_{}", Viseme::ALL[i - VISEME_BASE].name())
    } else if i < EXTRA_BASE {
        format!("emotion_{}", EMOTIONS[i - EMOTION_BASE])
    } else {
        EXTRAS[i - EXTRA_BASE].to_string()
    }
}

/// The index of a canonical channel by name (exact, case-sensitive).
pub fn index(name: &str) -> Option<usize> {
    if let Some(i) = ARKIT.iter().position(|n| *n == name) {
        return Some(i);
    }
    if let Some(v) = name.strip_prefix("viseme_") {
        return Viseme::ALL
            .iter()
            .position(|x| x.name() == v)
            .map(|i| VISEME_BASE + i);
    }
    if let Some(e) = name.strip_prefix("emotion_") {
        return EMOTIONS
            .iter()
            .position(|x| *x == e)
            .map(|i| EMOTION_BASE + i);
    }
    EXTRAS
        .iter()
        .position(|x| *x == name)
        .map(|i| EXTRA_BASE + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for i in 0..COUNT {
            assert_eq!(index(&name(i)), Some(i), "{}", name(i));
        }
        assert_eq!(ARKIT[ak::jawOpen], "jawOpen");
        assert_eq!(ARKIT[ak::tongueOut], "tongueOut");
        assert_eq!(ARKIT[ak::mouthPressRight], "mouthPressRight");
        assert_eq!(ARKIT[ak::browOuterUpRight], "browOuterUpRight");
    }
}

//! idol: a virtual idol on one machine.
//!
//! An LLM persona decides what to say, a neural voice says it, a facial-rig solver turns the speech and
//! the mood into blendshape frames, and all of it streams out on one sample clock. See
//! `docs/architecture.md` for the data flow and `DESIGN.md`-style stage boundaries.

pub mod align;
pub mod assets;
pub mod audio;
pub mod budget;
pub mod check;
pub mod config;
pub mod face;
pub mod farm;
pub mod fetch;
pub mod listen;
pub mod perform;
pub mod persona;
pub mod phonemize;
pub mod relay;
pub mod script;
pub mod server;
pub mod sink;
pub mod speech;
pub mod text;
pub mod time;
pub mod tomlpos;
pub mod tts;

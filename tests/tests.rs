//! One integration test binary (every test binary links candle and ONNX Runtime's loader, so one link
//! instead of many). Each stage has its own module.

mod common;
mod face;
mod foundation;
mod persona;
mod phonemize;
mod text;
mod tts;

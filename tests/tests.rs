//! One integration test binary (every test binary links candle and ONNX Runtime's loader, so one link
//! instead of many). Each stage has its own module.

mod audiolip;
mod browser;
mod budgets;
mod common;
mod face;
mod firstrun;
mod foundation;
mod fuzz;
mod kokoro;
mod layers;
mod listen;
mod llm;
mod llm_archs;
mod llm_qwen;
mod nats;
mod persona;
mod phonemize;
mod relays;
mod script;
mod serve;
mod serve_edge;
mod sinks;
mod text;
mod tts;
mod viewer;

//! The one integration test binary.

mod llm;

//! The one integration test binary; each stage's tests live in a module file next to this one.

mod phonemize;
mod text;

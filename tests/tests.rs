//! The one integration test binary: one module per stage.

mod face;

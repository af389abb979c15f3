//! The one integration test binary (each stage's tests are a module here).

mod persona;

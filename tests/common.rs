//! What every integration test module shares: the idol home with the real assets, fetched on first use
//! (so `cargo test` works on a fresh clone), once per test binary.

use idol::assets::Home;
use idol::fetch::{Fetcher, Quiet};
use std::sync::OnceLock;

/// The repository checkout with every pinned asset installed and verified.
pub fn home() -> Home {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let home = Home::from_manifest_dir();
    let ready = READY.get_or_init(|| {
        let f = Fetcher::new(home.clone());
        f.fetch_all(&mut Quiet)
            .map(|_| ())
            .map_err(|e| format!("fetching the real assets failed: {e}"))
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
    home
}

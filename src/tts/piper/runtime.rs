//! The process's ONNX Runtime: the shared library loaded once (with a clear error when it is
//! missing, cut short or for another platform) and its environment.

use crate::tts::TtsError;
use std::path::Path;
use std::sync::OnceLock;

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, loading the library at `lib` on first use.
pub fn ort_environment(lib: &Path) -> Result<ort::environment::Environment, TtsError> {
    let env = ENVIRONMENT.get_or_init(|| {
        if !lib.exists() {
            return Err(format!(
                "ONNX Runtime library not found at {}: run `idol fetch`",
                lib.display()
            ));
        }
        check_elf_complete(lib).map_err(|e| {
            format!(
                "ONNX Runtime library at {} is corrupt ({e}): delete it and run `idol fetch`",
                lib.display()
            )
        })?;
        ort::init_from(lib)
            .map_err(|e| format!("{}: {e}: {}", lib.display(), LOAD_HINT))?
            .with_name("idol")
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))
    });
    env.clone().map_err(TtsError::Runtime)
}

/// What to do when the ONNX Runtime library is there but does not load.
#[cfg(windows)]
const LOAD_HINT: &str = "run `idol fetch` to reinstall it; if it is whole, install the Microsoft Visual C++ \
     Redistributable (x64), which onnxruntime.dll needs (MSVCP140.dll, VCRUNTIME140.dll)";
#[cfg(not(windows))]
const LOAD_HINT: &str = "run `idol fetch` to reinstall it";

/// Checks that a shared library in ELF form holds every byte its headers promise. Loading a
/// truncated library maps pages past the end of the file, and the first touch of one kills the
/// process with SIGBUS instead of returning an error, so this is checked before `dlopen`. Other
/// formats (Mach-O, PE) pass unchecked: the loader reports their problems itself.
pub fn check_elf_complete(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = Vec::with_capacity(64 * 1024);
    f.take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    if !head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    // 64-bit little-endian only (the platforms ONNX Runtime ships ELF for); others pass unchecked.
    if head.len() < 64 || head[4] != 2 || head[5] != 1 {
        return if head.len() < 64 {
            Err(format!("{len} bytes: shorter than an ELF header"))
        } else {
            Ok(())
        };
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as u64;
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().expect("8 bytes"));
    let (phoff, shoff) = (u64_at(0x20), u64_at(0x28));
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let (shentsize, shnum) = (u16_at(0x3a), u16_at(0x3c));
    let mut needed = shoff.saturating_add(shentsize.saturating_mul(shnum));
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    needed = needed.max(ph_end);
    if phentsize >= 0x28 && ph_end <= head.len() as u64 {
        for i in 0..phnum {
            let o = (phoff + i * phentsize) as usize;
            let (offset, filesz) = (u64_at(o + 8), u64_at(o + 0x20));
            needed = needed.max(offset.saturating_add(filesz));
        }
    }
    if len < needed {
        return Err(format!(
            "{len} bytes where its headers need {needed}: the file is truncated"
        ));
    }
    Ok(())
}

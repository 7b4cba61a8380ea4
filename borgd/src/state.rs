//! The state file: the last result of each backup and of compaction,
//! written atomically after every run so `borgd status` can report it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    /// Done, but borg warned (files that changed or could not be read).
    Warning,
    Failure,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub started: DateTime<Local>,
    pub finished: DateTime<Local>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Sizes>,
}

/// What `borg create --json` reports about the new archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    pub original: u64,
    pub compressed: u64,
    pub deduplicated: u64,
    pub files: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub backups: BTreeMap<String, RunResult>,
    #[serde(default)]
    pub compaction: Option<RunResult>,
}

impl State {
    /// Reads the state file; a missing one is an empty state.
    pub fn load(path: &Path) -> Result<Self> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("state file {} is not valid", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state file atomically: temporary file, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut temp = tempfile_in(dir, path)?;
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        temp.1
            .write_all(&bytes)
            .and_then(|()| temp.1.sync_all())
            .with_context(|| format!("cannot write {}", temp.0.display()))?;
        fs::rename(&temp.0, path).with_context(|| format!("cannot replace {}", path.display()))
    }
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<(std::path::PathBuf, fs::File)> {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let file =
        fs::File::create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    Ok((temp, file))
}

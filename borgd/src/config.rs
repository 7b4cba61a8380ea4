//! The borgd TOML config, checked once at load so that a bad schedule,
//! an inline passphrase or a passcommand that cannot run is refused before
//! anything is scheduled.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use croner::Cron;
use serde::Deserialize;

use crate::passphrase::PassphraseSource;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub repository: Repository,
    pub passphrase: PassphraseSource,
    pub backups: Vec<Backup>,
    pub compaction: Option<Cron>,
    pub state_file: PathBuf,
    pub borg: PathBuf,
    pub lock_wait: Duration,
    pub grace_period: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub location: String,
    pub ssh_identity_file: Option<PathBuf>,
    pub compaction_schedule: Option<String>,
    /// Break a repository lock whose holder is provably gone (same host,
    /// dead pid). Off by default: a wrong guess corrupts nothing but can
    /// race a live borg on another host sharing the repository.
    #[serde(default)]
    pub break_stale_lock: bool,
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub name: String,
    pub schedule: Cron,
    pub source: Source,
    pub exclude: Vec<String>,
    pub pre: Vec<Vec<String>>,
    pub post: Vec<Vec<String>>,
    pub finally: Vec<Vec<String>>,
    pub keep: Option<Keep>,
}

/// What a backup archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Paths(Vec<String>),
    /// A command whose stdout becomes the archive's one file.
    Command(Vec<String>),
}

/// Retention for `borg prune`; only the given counts are passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
}

impl Keep {
    /// The `--keep-*` arguments.
    pub fn args(&self) -> Vec<String> {
        let counts = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ];
        counts
            .iter()
            .filter_map(|(unit, count)| count.map(|count| format!("--keep-{unit}={count}")))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: Repository,
    encryption: Option<RawEncryption>,
    #[serde(default, rename = "backup")]
    backups: Vec<RawBackup>,
    state_file: Option<PathBuf>,
    borg: Option<PathBuf>,
    lock_wait: Option<u64>,
    grace_period: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    passphrase_file: Option<PathBuf>,
    passcommand: Option<String>,
    systemd_credential: Option<String>,
    /// Accepted by the parser only to be refused with a helpful message.
    passphrase: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    name: String,
    schedule: String,
    #[serde(default)]
    paths: Vec<String>,
    command: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    pre: Vec<Vec<String>>,
    #[serde(default)]
    post: Vec<Vec<String>>,
    #[serde(default)]
    finally: Vec<Vec<String>>,
    keep: Option<Keep>,
}

const INLINE_PASSPHRASE: &str = "an inline passphrase is not accepted in the config; use \
     passphrase_file (such as a file on a cred mount), passcommand (such as \"cred item read \
     ID\") or systemd_credential (a LoadCredential= name)";

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {} is not valid", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        if let Ok(value) = text.parse::<toml::Table>()
            && value
                .get("encryption")
                .and_then(|table| table.get("passphrase"))
                .is_some()
        {
            bail!(INLINE_PASSPHRASE);
        }
        let raw: RawConfig = toml::from_str(text)?;
        let passphrase = passphrase_source(raw.encryption)?;
        let backups = backups(raw.backups)?;
        let compaction = match &raw.repository.compaction_schedule {
            Some(schedule) => Some(parse_schedule(schedule).context("compaction_schedule")?),
            None => None,
        };
        Ok(Self {
            repository: raw.repository,
            passphrase,
            backups,
            compaction,
            state_file: raw
                .state_file
                .unwrap_or_else(|| "/var/lib/borgd/state.json".into()),
            borg: raw.borg.unwrap_or_else(|| "borg".into()),
            lock_wait: Duration::from_secs(raw.lock_wait.unwrap_or(60)),
            grace_period: Duration::from_secs(raw.grace_period.unwrap_or(60)),
        })
    }
}

fn passphrase_source(encryption: Option<RawEncryption>) -> Result<PassphraseSource> {
    let Some(encryption) = encryption else {
        return Ok(PassphraseSource::None);
    };
    if encryption.passphrase.is_some() {
        bail!(INLINE_PASSPHRASE);
    }
    match (
        encryption.passphrase_file,
        encryption.passcommand,
        encryption.systemd_credential,
    ) {
        (Some(path), None, None) => Ok(PassphraseSource::File(path)),
        (None, Some(command), None) => {
            check_passcommand(&command)?;
            Ok(PassphraseSource::Passcommand(command))
        }
        (None, None, Some(name)) => {
            if name.is_empty() || name.contains('/') {
                bail!("systemd_credential {name:?} must be a credential name, not a path");
            }
            Ok(PassphraseSource::SystemdCredential(name))
        }
        _ => bail!(
            "[encryption] needs exactly one of passphrase_file, passcommand or systemd_credential"
        ),
    }
}

/// Borg splits BORG_PASSCOMMAND into words like a shell but runs it
/// without one, so shell syntax would reach the program literally.
pub fn check_passcommand(command: &str) -> Result<()> {
    let words = shlex::split(command)
        .with_context(|| format!("passcommand {command:?} has unbalanced quotes"))?;
    let Some(program) = words.first() else {
        bail!("passcommand is empty");
    };
    for word in &words {
        if word.starts_with('~') || word.contains('$') || word.contains('`') {
            bail!(
                "passcommand {command:?} uses {word:?}, but borg runs it without a shell, so \
                 ~ and $VARIABLES are not expanded; write the path out"
            );
        }
        if ["|", "||", "&&", ";", ">", ">>", "<", "&"].contains(&word.as_str()) {
            bail!(
                "passcommand {command:?} uses {word:?}, but borg runs it without a shell; put \
                 the pipeline in a script and name the script"
            );
        }
    }
    if find_executable(program).is_none() {
        bail!("passcommand program {program:?} is not an executable file here or on PATH");
    }
    Ok(())
}

fn find_executable(program: &str) -> Option<PathBuf> {
    let executable = |path: &Path| {
        fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
}

fn backups(raw: Vec<RawBackup>) -> Result<Vec<Backup>> {
    let mut names = HashSet::new();
    let mut backups = Vec::new();
    for backup in raw {
        let name = backup.name.clone();
        let checked = check_backup(backup).with_context(|| format!("backup {name:?}"))?;
        if !names.insert(name.clone()) {
            bail!("backup {name:?} is defined twice");
        }
        backups.push(checked);
    }
    Ok(backups)
}

fn check_backup(raw: RawBackup) -> Result<Backup> {
    let valid_name = !raw.name.is_empty()
        && raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid_name {
        bail!("the name may hold only letters, digits, '.', '_' and '-'");
    }
    let schedule = parse_schedule(&raw.schedule)?;
    let source = match (raw.paths.is_empty(), raw.command) {
        (false, None) => Source::Paths(raw.paths),
        (true, Some(command)) if !command.is_empty() => Source::Command(command),
        (true, None) => bail!("give paths or a command to archive"),
        _ => bail!("give either paths or a command, not both"),
    };
    for hook in raw.pre.iter().chain(&raw.post).chain(&raw.finally) {
        if hook.is_empty() {
            bail!("a hook is an empty command");
        }
    }
    Ok(Backup {
        name: raw.name,
        schedule,
        source,
        exclude: raw.exclude,
        pre: raw.pre,
        post: raw.post,
        finally: raw.finally,
        keep: raw.keep,
    })
}

pub fn parse_schedule(text: &str) -> Result<Cron> {
    Cron::from_str(text)
        .map_err(|err| anyhow::anyhow!("schedule {text:?} is not a valid cron expression: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[repository]\nlocation = \"/srv/borg\"\n";

    fn with(rest: &str) -> Result<Config> {
        Config::parse(&format!("{BASE}{rest}"))
    }

    #[test]
    fn full_config_parses() {
        let config = with(
            "[encryption]\npassphrase_file = \"/run/credfs/borg/passphrase\"\n\
             [[backup]]\nname = \"etc\"\nschedule = \"15 2 * * *\"\npaths = [\"/etc\"]\n\
             keep = { daily = 7, weekly = 4 }\n\
             [[backup]]\nname = \"db\"\nschedule = \"0 3 * * *\"\ncommand = [\"pg_dumpall\"]\n",
        )
        .unwrap();
        assert_eq!(config.backups.len(), 2);
        assert_eq!(
            config.backups[1].source,
            Source::Command(vec!["pg_dumpall".into()])
        );
        let keep = config.backups[0].keep.as_ref().unwrap().args();
        assert_eq!(keep, ["--keep-daily=7", "--keep-weekly=4"]);
    }

    #[test]
    fn inline_passphrase_is_refused_naming_the_alternatives() {
        let err = with("[encryption]\npassphrase = \"hunter2\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("passphrase_file") && err.contains("systemd_credential"),
            "{err}"
        );
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn invalid_cron_names_the_backup() {
        let err =
            with("[[backup]]\nname = \"etc\"\nschedule = \"61 * * * *\"\npaths = [\"/etc\"]\n")
                .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("\"etc\"") && text.contains("61 * * * *"),
            "{text}"
        );
    }

    #[test]
    fn passcommands_that_need_a_shell_are_refused() {
        for command in [
            "cat ~/pass",
            "cat $HOME/pass",
            "cred item read x | tr -d x",
            "no-such-program-x",
        ] {
            assert!(check_passcommand(command).is_err(), "{command}");
        }
        check_passcommand("cat /etc/hostname").unwrap();
        check_passcommand("/bin/cat '/path with spaces'").unwrap();
    }

    #[test]
    fn backups_need_exactly_one_source_and_a_unique_name() {
        let both = "[[backup]]\nname = \"a\"\nschedule = \"* * * * *\"\n\
                    paths = [\"/\"]\ncommand = [\"x\"]\n";
        assert!(with(both).is_err());
        let twice = "[[backup]]\nname = \"a\"\nschedule = \"* * * * *\"\npaths = [\"/\"]\n";
        assert!(with(&format!("{twice}{twice}")).is_err());
        let bad_name = "[[backup]]\nname = \"a b\"\nschedule = \"* * * * *\"\npaths = [\"/\"]\n";
        assert!(with(bad_name).is_err());
    }
}

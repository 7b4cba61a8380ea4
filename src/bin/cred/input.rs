//! Where secrets and answers come from: files, standard input, or the
//! terminal. Without a terminal a prompt fails at once and names the flag
//! that would have made it unnecessary.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use thiserror::Error;
use zeroize::Zeroizing;

use credstore::secret::SecretBytes;

use crate::cli::{PassphraseArgs, ValueArgs};

/// A missing argument that only a terminal could have supplied.
#[derive(Debug, Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

fn terminal() -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
}

/// Whether there is a terminal to prompt on.
pub(crate) fn has_terminal() -> bool {
    terminal().is_some()
}

/// The admin passphrase. With `confirm`, a typed passphrase is asked twice.
pub(crate) fn passphrase(args: &PassphraseArgs, confirm: bool) -> Result<SecretBytes> {
    if let Some(path) = &args.passphrase_file {
        return Ok(read_file(path, "passphrase file")?.trim_line_ending());
    }
    if args.passphrase_stdin {
        return Ok(read_stdin()?.trim_line_ending());
    }
    if terminal().is_none() {
        return Err(UsageError(
            "no admin passphrase given and no terminal to ask on; pass --passphrase-file FILE, \
             set CRED_PASSPHRASE_FILE or pass --passphrase-stdin"
                .into(),
        )
        .into());
    }
    // Asking twice means the store is new and this sets its passphrase.
    let prompt = if confirm {
        "New store passphrase: "
    } else {
        "Store passphrase: "
    };
    prompt_secret(prompt, confirm)
}

/// An item value, byte for byte as given.
pub(crate) fn value(args: &ValueArgs) -> Result<SecretBytes> {
    if let Some(path) = &args.value_file {
        return read_file(path, "value file");
    }
    if args.value_stdin {
        return read_stdin();
    }
    if terminal().is_none() {
        return Err(UsageError(
            "no value given and no terminal to ask on; pass --value-file FILE or --value-stdin"
                .into(),
        )
        .into());
    }
    prompt_secret("Value: ", true)
}

/// A client secret, from a file, standard input or the terminal.
pub(crate) fn client_secret(file: Option<&Path>, stdin: bool) -> Result<SecretBytes> {
    let secret = match file {
        Some(path) => read_file(path, "client secret file")?,
        None if stdin => read_stdin()?,
        None if terminal().is_some() => prompt_secret("Client secret: ", false)?,
        None => {
            return Err(UsageError(
                "no client secret given and no terminal to ask on; pass --client-secret-file FILE \
                 or --client-secret-stdin"
                    .into(),
            )
            .into());
        }
    };
    Ok(secret.trim_line_ending())
}

/// Asks `question` on the terminal unless `yes`; declining is an error.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let Some(tty) = terminal() else {
        return Err(UsageError(format!(
            "{question}: pass --yes to confirm without a terminal"
        ))
        .into());
    };
    let answer = ask(tty, &format!("{question}? [y/N] "))?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("cancelled");
    }
    Ok(())
}

/// Asks for a line of visible input on the terminal.
pub(crate) fn ask_line(prompt: &str, what: &str, flag: &str) -> Result<String> {
    let Some(tty) = terminal() else {
        return Err(UsageError(format!(
            "no {what} given and no terminal to ask on; pass {flag}"
        ))
        .into());
    };
    Ok(ask(tty, prompt)?.trim().to_owned())
}

fn ask(mut tty: File, prompt: &str) -> Result<String> {
    tty.write_all(prompt.as_bytes())
        .context("cannot write to the terminal")?;
    let mut line = String::new();
    BufReader::new(tty)
        .read_line(&mut line)
        .context("cannot read from the terminal")?;
    Ok(line)
}

fn prompt_secret(prompt: &str, confirm: bool) -> Result<SecretBytes> {
    let first = read_hidden(prompt)?;
    if confirm {
        let second = read_hidden("Again: ")?;
        if !first.ct_eq(second.expose()) {
            bail!("the two entries differ");
        }
    }
    if first.is_empty() {
        bail!("nothing was entered");
    }
    Ok(first)
}

fn read_hidden(prompt: &str) -> Result<SecretBytes> {
    let text = rpassword::prompt_password(prompt).context("cannot read from the terminal")?;
    Ok(SecretBytes::from(text))
}

fn read_file(path: &Path, what: &str) -> Result<SecretBytes> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(SecretBytes::new(bytes))
}

fn read_stdin() -> Result<SecretBytes> {
    let mut bytes = Zeroizing::new(Vec::new());
    io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    Ok(SecretBytes::copy_from(&bytes))
}

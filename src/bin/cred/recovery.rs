//! `cred store recovery-recipient` and `cred store export`: the two ways
//! to get values out of the store without it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use zeroize::Zeroizing;

use credstore::client::{ClientError, config};
use credstore::protocol::{Operation, Response};

use crate::commands::Session;
use crate::input;

/// Makes an age identity here, keeps it in FILE or shows it once, and
/// sets its recipient on the store. The identity is saved before the
/// store knows the recipient, so no value is ever encrypted to a key
/// nobody kept.
pub(crate) fn set_recipient(
    session: &Session,
    identity_out: Option<&Path>,
    yes: bool,
) -> Result<()> {
    input::confirm(
        "set a new recovery recipient; every value will also be encrypted to it",
        yes,
    )?;
    let auth = session.admin()?;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let secret =
        Zeroizing::new(age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned());
    let text = Zeroizing::new(format!(
        "# recovery identity of a credstore\n# public key: {recipient}\n{}\n",
        *secret
    ));

    match identity_out {
        Some(path) => write_private(path, text.as_bytes())?,
        None => {
            eprintln!("cred: the recovery identity follows; it is shown only now, keep it offline");
            print!("{}", *text);
        }
    }

    let Response::Reencrypted { values } = session.call(
        auth,
        Operation::SetRecoveryRecipient {
            recipient: recipient.clone(),
        },
    )?
    else {
        bail!(ClientError::UnexpectedResponse);
    };
    eprintln!("cred: recovery recipient {recipient} set; {values} value file(s) re-encrypted");
    Ok(())
}

/// Writes every item and its value to `output` as JSON, mode 0600.
pub(crate) fn export(session: &Session, output: &Path, pretty: bool, yes: bool) -> Result<()> {
    input::confirm(
        "write every secret of the store, unencrypted, to a file",
        yes,
    )?;
    input::confirm("really write them all out in the clear", yes)?;
    let auth = session.admin()?;
    let Response::Items { items, damaged } =
        session.call(auth, Operation::ItemList { search: None })?
    else {
        bail!(ClientError::UnexpectedResponse);
    };
    if !damaged.is_empty() {
        bail!(
            "{} damaged record(s) in the store; nothing exported",
            damaged.len()
        );
    }

    let mut entries = Vec::with_capacity(items.len());
    for item in &items {
        let Response::Value { value } =
            session.call(session.admin()?, Operation::ItemRead { id: item.id })?
        else {
            bail!(ClientError::UnexpectedResponse);
        };
        let value = match std::str::from_utf8(value.expose()) {
            Ok(text) => json!({ "value": text }),
            Err(_) => json!({ "value_base64": BASE64.encode(value.expose()) }),
        };
        let mut entry = json!({
            "id": item.id,
            "description": item.description,
            "created": item.created,
            "updated": item.updated,
        });
        entry
            .as_object_mut()
            .expect("an object")
            .extend(value.as_object().expect("an object").clone());
        entries.push(entry);
    }
    let text = Zeroizing::new(if pretty {
        serde_json::to_string_pretty(&entries)?
    } else {
        serde_json::to_string(&entries)?
    });
    write_private(output, text.as_bytes())?;
    eprintln!(
        "cred: exported {} item(s) to {}",
        items.len(),
        output.display()
    );
    Ok(())
}

/// Creates `path` (which must not exist) mode 0600 and writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    config::write_private(path, bytes)
        .with_context(|| format!("cannot write {} (it must not exist yet)", path.display()))
}

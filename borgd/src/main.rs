//! borgd: runs Borg backups on schedule, fetching the repository
//! passphrase at run time instead of keeping it in its config.
//!
//! Not yet here: the scheduler. Until it is, borgd says so and exits, so
//! that no unit or script mistakes it for a working daemon.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "borgd: the scheduler is not built yet; run borg with \
         BORG_PASSCOMMAND=\"cred item read ID\" meanwhile"
    );
    ExitCode::FAILURE
}

//! Config text for each parser that reads a file an administrator writes:
//! the credstore config, the cred client config (with the trust it names)
//! and the borgd config with its schedules and passcommands. The first
//! byte picks the parser; what the client config accepts must also write
//! back into text that it accepts again.

#![no_main]

use credstore::client::ClientConfig;
use credstore::server::ServerConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match selector % 5 {
        0 => {
            let _ = toml::from_str::<ServerConfig>(text);
        }
        1 => client_config(text),
        2 => {
            let _ = borgd::config::Config::parse(text);
        }
        3 => {
            let _ = borgd::config::parse_schedule(text);
        }
        _ => {
            let _ = borgd::config::check_passcommand(text);
        }
    }
});

fn client_config(text: &str) {
    let Ok(config) = toml::from_str::<ClientConfig>(text) else {
        return;
    };
    if let Some(server) = &config.server {
        let _ = server.trust();
    }
    let written = toml::to_string(&config).expect("a parsed client config encodes");
    toml::from_str::<ClientConfig>(&written).expect("an encoded client config parses");
}

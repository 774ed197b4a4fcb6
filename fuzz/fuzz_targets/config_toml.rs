//! Fuzzes configuration parsing: any text given to `Config::from_toml` gives a configuration
//! or an error, never a panic, and an error never echoes the target address.
//!
//! The base directory holds the files a valid configuration names (key, token, Arti
//! fragment), so inputs that are valid TOML reach the validation of every section.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rustbalance::config::Config;

/// The files a configuration may point at.
fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("rb-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(d.join("blinded")).unwrap();
        for f in [
            "hs_ed25519_secret_key",
            "arti.toml",
            "mesh.key",
            "cluster.token",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        d
    })
}

/// A secret-looking target that must never appear in an error.
const TARGET: &str = "hiddenbackend.invalid:8080";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As given.
    let _ = Config::from_toml(text, base());
    // Spliced into a valid skeleton, so the fuzzer's bytes land inside real sections; the
    // target is a known secret, so an error must not contain it.
    let doc = format!(
        "[node]\nid = \"n1\"\n[master]\nonion_address = \
         \"coaay4girgmvjbmaw6tlsbq7cmxpvwpnew5vbglx4cor2r5xpqhcdoyd.onion\"\n\
         key = \"hs_ed25519_secret_key\"\n[target]\naddress = \"{TARGET}\"\n{text}\n\
         [tor]\nstate_dir = \"state\"\ncache_dir = \"cache\"\n"
    );
    if let Err(e) = Config::from_toml(&doc, base()) {
        let e = e.to_string();
        assert!(
            !e.contains("hiddenbackend"),
            "an error echoed the target: {e}"
        );
    }
});

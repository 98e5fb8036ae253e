//! The coordinator's client tokens file (`--tokens`), which it re-reads while running: any text
//! must give a token set or an error naming the line, never a panic; every line of a file that
//! parses authenticates nobody unless its token is presented.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_proto::auth::TokenSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = TokenSet::parse(text, "tokens") {
        assert!(set.len() <= text.lines().count());
        for line in text.lines() {
            let _ = set.find(line);
        }
    }
});

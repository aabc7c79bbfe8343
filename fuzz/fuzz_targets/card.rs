//! Any bytes sent to `POST /characters/import` must give a card or an error, never a panic,
//! and a card we read must survive being written into a PNG and read again.
#![no_main]

use companion::modules::catalog::{CardCheck, check_card};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    if let Ok(CardCheck {
        name, rewritten, ..
    }) = check_card(file)
    {
        let again = check_card(&rewritten).expect("a card we wrote reads again");
        assert_eq!(again.name, name);
    }
});

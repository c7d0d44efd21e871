//! The blob parser, on any bytes: no panic, and the ledger balances (every tuple accepted
//! or rejected with a reason, tables and ledger agree).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nsgflow::parse::check_blob(data);
});

//! The tuple grammar: the fast pass and the reference grammar must agree on every input
//! (the same tuple, or the same reason and field), for every family, without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nsgflow::parse::tuple::check_agreement(data);
});

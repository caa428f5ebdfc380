//! Arbitrary bytes into every request-body parser the API and the console run: the JSON body
//! types (through the API's own extractor), the console's forms, the guard's CSRF field and
//! session-cookie readers. Any panic is a finding. A deterministic run of the same functions is
//! `crates/kawal-api/tests/route_matrix.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kawal_api::api::parse::all(data);
});

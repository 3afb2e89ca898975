//! Fuzz the frame decoder: any input must decode, ask for more bytes, or
//! fail with FRAME_ERROR (501) — never panic or over-allocate.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        match shoal_broker::codec::decode(&mut buf, 131_072) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                assert_eq!(e.code, 501);
                break;
            }
        }
    }
});

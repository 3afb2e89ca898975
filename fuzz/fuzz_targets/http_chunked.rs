//! libFuzzer target: [`shoal_fuzz::http_chunked`], run on a server-sized stack.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoal_fuzz::on_server_stack(shoal_fuzz::http_chunked, data);
});

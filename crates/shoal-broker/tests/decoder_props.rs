//! Property tests for the frame decoder: arbitrary bytes, valid frames cut at
//! any point and frames with a corrupted byte never panic; they decode,
//! ask for more bytes, or fail with FRAME_ERROR (501).

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, AMQPClass};
use bytes::BytesMut;
use proptest::prelude::*;
use shoal_broker::codec::decode;

fn drain(bytes: &[u8], frame_max: u32) -> Result<usize, u16> {
    let mut buf = BytesMut::from(bytes);
    let mut n = 0;
    loop {
        match decode(&mut buf, frame_max) {
            Ok(Some(_)) => n += 1,
            Ok(None) => return Ok(n),
            Err(e) => return Err(e.code),
        }
    }
}

fn publish_frames(rk: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let m = AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: rk.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    out = gen_frame(&m)(WriteContext::from(out))
        .expect("encode")
        .write;
    let props = amq_protocol::protocol::BasicProperties::default();
    shoal_broker::codec::put_content(
        &mut out,
        1,
        &{
            let mut raw = Vec::new();
            shoal_broker::message::encode_properties_into(&props, &mut raw);
            raw
        },
        body,
        4096,
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(code) = drain(&bytes, 8192) {
            prop_assert_eq!(code, 501);
        }
    }

    #[test]
    fn truncated_frames_wait_for_more(rk in "[a-z.]{0,40}", body in proptest::collection::vec(any::<u8>(), 0..10000), cut in 0usize..20000) {
        let all = publish_frames(&rk, &body);
        let cut = cut.min(all.len());
        prop_assert!(drain(&all[..cut], 1 << 20).is_ok());
        // method + header, and at least one body frame unless the body is empty
        let expected = 2 + usize::from(!body.is_empty());
        prop_assert!(drain(&all, 1 << 20).unwrap() >= expected);
    }

    #[test]
    fn corrupted_frames_are_frame_errors(body in proptest::collection::vec(any::<u8>(), 0..300), at in 0usize..400, val in any::<u8>()) {
        let mut all = publish_frames("k", &body);
        let at = at.min(all.len() - 1);
        all[at] = val;
        if let Err(code) = drain(&all, 1 << 20) {
            prop_assert_eq!(code, 501);
        }
    }
}

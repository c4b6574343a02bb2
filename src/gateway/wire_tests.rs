//! Tests of the server-side WebSocket framing: what a client may send, byte by byte.

use super::wire::{accept_key, put_close, put_text, Flow, FrameReader, Incoming, WireError};

const MAX: usize = 1024;

/// A client frame: masked, with `first` as its first byte (FIN, RSV and opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | u8::try_from(n).expect("small")),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 0x7E);
            out.extend_from_slice(&u16::try_from(n).expect("u16").to_be_bytes());
        }
        n => {
            out.push(0x80 | 0x7F);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Everything `reader` makes of `input`, as owned values.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

fn feed_all(reader: &mut FrameReader, input: &[u8]) -> Result<Vec<Got>, WireError> {
    let mut input = input.to_vec();
    let mut got = Vec::new();
    let used = reader.feed(&mut input, MAX, |m| {
        got.push(match m {
            Incoming::Text(t) => Got::Text(t.to_owned()),
            Incoming::Binary => Got::Binary,
            Incoming::Ping(p) => Got::Ping(p.to_vec()),
            Incoming::Pong => Got::Pong,
            Incoming::Close(c) => Got::Close(c),
        });
        Flow::Continue
    })?;
    assert_eq!(used, input.len(), "everything is used when nothing stops");
    Ok(got)
}

#[test]
fn frames_split_at_every_byte_come_out_whole() {
    let mut stream = client_frame(0x81, br#"{"type":"ack","ids":["a"]}"#);
    stream.extend(client_frame(0x89, b"hi"));
    stream.extend(client_frame(0x81, &[b'x'; 300]));
    stream.extend(client_frame(0x88, &[0x03, 0xe8, b'o', b'k']));
    for cut in 0..stream.len() {
        let mut reader = FrameReader::default();
        let mut got = feed_all(&mut reader, &stream[..cut]).expect("first part");
        got.extend(feed_all(&mut reader, &stream[cut..]).expect("second part"));
        assert_eq!(
            got,
            vec![
                Got::Text(r#"{"type":"ack","ids":["a"]}"#.into()),
                Got::Ping(b"hi".to_vec()),
                Got::Text("x".repeat(300)),
                Got::Close(Some(1000)),
            ],
            "cut at {cut}"
        );
        assert_eq!(
            reader.held(),
            0,
            "nothing held after whole frames (cut at {cut})"
        );
    }
}

#[test]
fn fragmented_text_is_joined_and_control_frames_may_interleave() {
    let mut stream = client_frame(0x01, b"hel");
    stream.extend(client_frame(0x8A, b""));
    stream.extend(client_frame(0x00, "lo ✓".as_bytes()));
    stream.extend(client_frame(0x80, b"!"));
    let mut reader = FrameReader::default();
    let got = feed_all(&mut reader, &stream).expect("valid");
    assert_eq!(got, vec![Got::Pong, Got::Text("hello ✓!".into())]);
    assert_eq!(reader.held(), 0);
}

#[test]
fn stopping_leaves_the_rest_of_the_input_unread() {
    let mut stream = client_frame(0x81, b"one");
    let first_len = stream.len();
    stream.extend(client_frame(0x81, b"two"));
    let mut reader = FrameReader::default();
    let mut seen = 0;
    let used = reader
        .feed(&mut stream, MAX, |_| {
            seen += 1;
            Flow::Stop
        })
        .expect("valid");
    assert_eq!((seen, used), (1, first_len));
}

#[test]
fn what_a_server_must_refuse_is_refused_with_the_right_close_code() {
    let unmasked = vec![0x81, 0x02, b'h', b'i'];
    let cases: Vec<(Vec<u8>, WireError, u16)> = vec![
        (unmasked, WireError::Unmasked, 1002),
        (client_frame(0xC1, b"x"), WireError::Reserved, 1002),
        (client_frame(0x83, b"x"), WireError::Opcode(3), 1002),
        (client_frame(0x09, b"x"), WireError::BadControl, 1002),
        (client_frame(0x89, &[0; 126]), WireError::BadControl, 1002),
        (client_frame(0x80, b"x"), WireError::StrayContinuation, 1002),
        (
            [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
            WireError::Interleaved,
            1002,
        ),
        (
            client_frame(0x81, &[b'x'; MAX + 1]),
            WireError::TooLarge(MAX),
            1009,
        ),
        (
            [
                client_frame(0x01, &[b'x'; 600]),
                client_frame(0x80, &[b'x'; 600]),
            ]
            .concat(),
            WireError::TooLarge(MAX),
            1009,
        ),
        (client_frame(0x81, &[0xff, 0xfe]), WireError::NotUtf8, 1007),
        (client_frame(0x88, &[0x03]), WireError::BadClose, 1002),
    ];
    for (bytes, want, code) in cases {
        let mut reader = FrameReader::default();
        let err = feed_all(&mut reader, &bytes).expect_err("refused");
        assert_eq!(err, want);
        assert_eq!(err.close_code(), code, "{want:?}");
    }
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_payload_arrives() {
    // Only the header of a 1 GiB frame: no memory is set aside for it.
    let header = [0x81, 0x80 | 127, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4];
    let mut reader = FrameReader::default();
    let err = feed_all(&mut reader, &header).expect_err("too large");
    assert_eq!(err, WireError::TooLarge(MAX));
}

#[test]
fn server_frames_are_unmasked_with_the_shortest_length() {
    let mut out = Vec::new();
    put_text(&mut out, b"hi");
    assert_eq!(out, [0x81, 2, b'h', b'i']);
    let mut out = Vec::new();
    put_text(&mut out, &[b'x'; 200]);
    assert_eq!(&out[..4], &[0x81, 126, 0, 200]);
    assert_eq!(out.len(), 204);
    let mut out = Vec::new();
    put_text(&mut out, &vec![b'x'; 70_000]);
    assert_eq!(&out[..2], &[0x81, 127]);
    assert_eq!(out.len(), 70_010);
    let mut out = Vec::new();
    put_close(&mut out, 4009, &"é".repeat(100));
    assert_eq!(out[0], 0x88);
    assert!(usize::from(out[1]) <= 125, "control frames stay small");
    assert!(
        std::str::from_utf8(&out[4..]).is_ok(),
        "the cut keeps UTF-8 whole"
    );
}

#[test]
fn the_accept_key_matches_the_rfc_example() {
    // RFC 6455, section 1.3.
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn text_of_every_length_round_the_mask_word_comes_out_unmasked() {
    // The unmasking works eight bytes at a time with a byte-wise tail: every length from
    // empty to a few words, so each tail length and mask phase is crossed.
    for n in 0..=70usize {
        let text: String = (b'a'..=b'z').cycle().take(n).map(char::from).collect();
        let mut reader = FrameReader::default();
        let got = feed_all(&mut reader, &client_frame(0x81, text.as_bytes())).expect("frame");
        assert_eq!(got, vec![Got::Text(text)], "length {n}");
    }
}

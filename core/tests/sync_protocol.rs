//! The automerge-repo wire protocol: round trips, document ids, the decoder on arbitrary and
//! damaged input, the handshake, and convergence of two peers whose frames are dropped,
//! duplicated and reordered before they reconnect.
// Tests unwrap on purpose: a failure should stop the test with the value that broke it.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use fitedge_core::sync::protocol::*;
use proptest::prelude::*;

fn id() -> DocumentId {
    DocumentId::from_bytes([0x42; 16])
}

fn samples() -> Vec<Message> {
    let p = |s: &str| PeerId::from(s);
    vec![
        Message::Join {
            sender_id: p("a"),
            supported_protocol_versions: vec!["1".into()],
            metadata: Some(PeerMetadata {
                storage_id: Some("s1".into()),
                is_ephemeral: false,
            }),
        },
        Message::Peer {
            sender_id: p("b"),
            target_id: p("a"),
            selected_protocol_version: "1".into(),
            metadata: None,
        },
        Message::Leave { sender_id: p("a") },
        Message::Request {
            sender_id: p("a"),
            target_id: p("b"),
            document_id: id(),
            data: vec![1, 2, 3],
        },
        Message::Sync {
            sender_id: p("a"),
            target_id: p("b"),
            document_id: id(),
            data: vec![],
        },
        Message::DocUnavailable {
            sender_id: p("b"),
            target_id: p("a"),
            document_id: id(),
        },
        Message::Ephemeral {
            sender_id: p("a"),
            target_id: p("b"),
            count: 7,
            session_id: "sess".into(),
            document_id: id(),
            data: vec![9],
        },
        Message::Error {
            sender_id: None,
            target_id: None,
            message: "nope".into(),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        assert_eq!(
            Message::decode(&m.encode()).unwrap(),
            m,
            "{}",
            m.type_name()
        );
    }
}

#[test]
fn document_ids_are_bs58check_of_16_bytes() {
    let d = DocumentId::random();
    let s = d.to_string();
    assert_eq!(s.parse::<DocumentId>().unwrap(), d);
    assert_eq!(DocumentId::from_url(&d.to_url()).unwrap(), d);
    // Independent check of the encoding: Base58 of bytes + first 4 bytes of SHA-256(SHA-256).
    let raw = bs58::decode(&s).into_vec().unwrap();
    assert_eq!(raw.len(), 20);
    assert_eq!(&raw[..16], d.as_bytes());
    let h1 = ring::digest::digest(&ring::digest::SHA256, &raw[..16]);
    let h2 = ring::digest::digest(&ring::digest::SHA256, h1.as_ref());
    assert_eq!(&raw[16..], &h2.as_ref()[..4]);
    // A changed character breaks the checksum; 15 bytes are refused.
    let mut bad = s.clone().into_bytes();
    bad[3] = if bad[3] == b'2' { b'3' } else { b'2' };
    assert!(String::from_utf8(bad)
        .unwrap()
        .parse::<DocumentId>()
        .is_err());
    let mut short = vec![1u8; 15];
    let sum = ring::digest::digest(
        &ring::digest::SHA256,
        ring::digest::digest(&ring::digest::SHA256, &short).as_ref(),
    );
    short.extend_from_slice(&sum.as_ref()[..4]);
    assert_eq!(
        bs58::encode(short).into_string().parse::<DocumentId>(),
        Err(DocumentIdError::Length(15))
    );
    assert!(DocumentId::from_url("automerge:0OIl").is_err());
    assert_eq!(DocumentId::from_url("http://x"), Err(DocumentIdError::Url));
}

#[test]
fn truncation_is_incomplete_and_garbage_is_invalid() {
    for m in samples() {
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                Message::decode(&bytes[..cut]),
                Err(DecodeError::Incomplete),
                "{} cut at {cut}",
                m.type_name()
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            Message::decode(&extra),
            Err(DecodeError::Invalid(_))
        ));
    }
    // Not a map.
    assert!(matches!(
        Message::decode(&[0x01]),
        Err(DecodeError::Invalid(_))
    ));
    // A map without `type`.
    assert!(matches!(
        Message::decode(&[0xa0]),
        Err(DecodeError::MissingField { field: "type", .. })
    ));
    // A sync message without data.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(4).unwrap();
    e.str("type").unwrap().str("sync").unwrap();
    e.str("senderId").unwrap().str("a").unwrap();
    e.str("targetId").unwrap().str("b").unwrap();
    e.str("documentId").unwrap().str(&id().to_string()).unwrap();
    assert!(matches!(
        Message::decode(e.writer()),
        Err(DecodeError::MissingField { field: "data", .. })
    ));
    // Duplicate keys are refused.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(2).unwrap();
    e.str("type").unwrap().str("leave").unwrap();
    e.str("type").unwrap().str("leave").unwrap();
    assert!(matches!(
        Message::decode(e.writer()),
        Err(DecodeError::Invalid(_))
    ));
    // Deep nesting in an unknown key does not overflow the stack.
    let mut deep = vec![0xa2, 0x64];
    deep.extend_from_slice(b"type");
    deep.push(0x65);
    deep.extend_from_slice(b"leave");
    deep.push(0x61);
    deep.push(b'x');
    deep.extend(std::iter::repeat_n(0x81, 200_000));
    deep.push(0x00);
    assert!(Message::decode(&deep).is_err()); // no senderId, but no crash either
}

#[test]
fn unknown_types_and_keys_and_alternative_encodings_are_tolerated() {
    // Indefinite-length map, an unknown key, `metadata` (samod's name), documentId as bytes.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.begin_map().unwrap();
    e.str("type").unwrap().str("doc-unavailable").unwrap();
    e.str("senderId").unwrap().str("a").unwrap();
    e.str("targetId").unwrap().str("b").unwrap();
    e.str("documentId").unwrap().bytes(id().as_bytes()).unwrap();
    e.str("future")
        .unwrap()
        .array(2)
        .unwrap()
        .u8(1)
        .unwrap()
        .u8(2)
        .unwrap();
    e.end().unwrap();
    assert_eq!(
        Message::decode(e.writer()).unwrap(),
        Message::DocUnavailable {
            sender_id: PeerId::from("a"),
            target_id: PeerId::from("b"),
            document_id: id()
        }
    );
    let m = Message::Unsupported {
        type_name: "remote-heads-changed".into(),
    };
    assert_eq!(Message::decode(&m.encode()).unwrap(), m);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Fuzz-style: arbitrary bytes never panic the decoder or a connection.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
        let mut server = Connection::responder(PeerId::from("s"), None);
        let _ = server.receive(&bytes);
        let (mut client, _) = Connection::initiator(PeerId::from("c"), None);
        let _ = client.receive(&bytes);
    }

    /// Mutated valid frames: decode to something or fail cleanly; a ready connection survives.
    #[test]
    fn mutated_frames_never_panic(which in 0usize..8, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = samples()[which].encode();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = Message::decode(&bytes);
        let (mut client, join) = Connection::initiator(PeerId::from("a"), None);
        let mut server = Connection::responder(PeerId::from("b"), None);
        let Event::Joined { reply, .. } = server.receive(&join.encode()).unwrap() else { panic!() };
        client.receive(&reply.encode()).unwrap();
        let _ = server.receive(&bytes);
    }
}

// ------------------------------------------------------------------------------ handshake

fn pair() -> (Connection, Connection) {
    let (mut client, join) = Connection::initiator(PeerId::from("client"), None);
    let mut server = Connection::responder(PeerId::from("server"), None);
    let Event::Joined { reply, peer, .. } = server.receive(&join.encode()).unwrap() else {
        panic!("no join")
    };
    assert_eq!(peer, PeerId::from("client"));
    assert!(matches!(
        client.receive(&reply.encode()).unwrap(),
        Event::Ready { .. }
    ));
    (client, server)
}

#[test]
fn handshake_rules() {
    // Sync before join is refused.
    let mut server = Connection::responder(PeerId::from("server"), None);
    let sync = Message::Sync {
        sender_id: PeerId::from("c"),
        target_id: PeerId::from("server"),
        document_id: id(),
        data: vec![],
    };
    assert!(matches!(
        server.receive(&sync.encode()),
        Err(ProtocolError::NotReady(_))
    ));
    // An unsupported version is refused and closes the link.
    let join = Message::Join {
        sender_id: PeerId::from("c"),
        supported_protocol_versions: vec!["2".into()],
        metadata: None,
    };
    assert!(matches!(
        server.receive(&join.encode()),
        Err(ProtocolError::UnsupportedVersion)
    ));
    assert!(server.is_closed());
    // After the handshake, a message from someone else or for someone else is refused.
    let (_, mut server) = pair();
    let forged = Message::DocUnavailable {
        sender_id: PeerId::from("mallory"),
        target_id: PeerId::from("server"),
        document_id: id(),
    };
    assert!(matches!(
        server.receive(&forged.encode()),
        Err(ProtocolError::WrongSender { .. })
    ));
    let misrouted = Message::DocUnavailable {
        sender_id: PeerId::from("client"),
        target_id: PeerId::from("other"),
        document_id: id(),
    };
    assert!(matches!(
        server.receive(&misrouted.encode()),
        Err(ProtocolError::WrongTarget { .. })
    ));
    // Garbage in `data` is a clear error, not a panic.
    let bad = Message::Sync {
        sender_id: PeerId::from("client"),
        target_id: PeerId::from("server"),
        document_id: id(),
        data: vec![0xff, 0x00, 0x13],
    };
    assert!(matches!(
        server.receive(&bad.encode()),
        Err(ProtocolError::BadSyncMessage(_))
    ));
}

#[test]
fn an_empty_peer_requests_and_a_refusal_is_doc_unavailable() {
    let (mut client, mut server) = pair();
    let empty = Automerge::new();
    let m = client.generate(&id(), &empty).unwrap().unwrap();
    assert_eq!(m.type_name(), "request");
    let Event::Sync { request, .. } = server.receive(&m.encode()).unwrap() else {
        panic!()
    };
    assert!(request);
    let answer = server.doc_unavailable(&id()).unwrap();
    assert!(matches!(
        client.receive(&answer.encode()).unwrap(),
        Event::DocUnavailable { document_id } if document_id == id()
    ));
}

#[test]
fn a_checked_receive_that_fails_leaves_the_document_untouched() {
    let (mut client, mut server) = pair();
    let mut client_doc = Automerge::new();
    let mut tx = client_doc.transaction();
    tx.put(ROOT, "hr", 400_i64).unwrap();
    tx.commit();
    let mut server_doc = Automerge::new();
    let mut refused = 0;
    for _ in 0..10 {
        if let Some(m) = client.generate(&id(), &client_doc).unwrap() {
            if let Event::Sync { message, .. } = server.receive(&m.encode()).unwrap() {
                let r = server.receive_sync_checked(&id(), &mut server_doc, message, |_, after| {
                    match after.get(ROOT, "hr").unwrap() {
                        Some((v, _)) if v.as_i64() > Some(300) => Err("hr above 300"),
                        _ => Ok(()),
                    }
                });
                if let Err(ProtocolError::Rejected(why)) = r {
                    assert!(why.contains("300"));
                    refused += 1;
                    break;
                }
            }
        }
        if let Some(m) = server.generate(&id(), &server_doc).unwrap() {
            if let Event::Sync { message, .. } = client.receive(&m.encode()).unwrap() {
                client
                    .receive_sync(&id(), &mut client_doc, message)
                    .unwrap();
            }
        }
    }
    assert_eq!(refused, 1);
    assert!(
        server_doc.get_heads().is_empty(),
        "nothing of the refused change was kept"
    );
}

// -------------------------------------------------------------------- faults and convergence

/// One step of a faulty schedule.
#[derive(Clone, Debug)]
enum Step {
    /// Peer 0 or 1 makes a local edit.
    Edit(usize, i64),
    /// Peer 0 or 1 generates a message into the channel.
    Send(usize),
    /// Deliver the in-flight frame at this index (reordering).
    Deliver(prop::sample::Index),
    /// Duplicate the in-flight frame at this index.
    Duplicate(prop::sample::Index),
    /// Drop the in-flight frame at this index.
    Drop(prop::sample::Index),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..2, any::<i64>()).prop_map(|(p, v)| Step::Edit(p, v)),
        (0usize..2).prop_map(Step::Send),
        (0usize..2).prop_map(Step::Send),
        any::<prop::sample::Index>().prop_map(Step::Deliver),
        any::<prop::sample::Index>().prop_map(Step::Deliver),
        any::<prop::sample::Index>().prop_map(Step::Duplicate),
        any::<prop::sample::Index>().prop_map(Step::Drop),
    ]
}

fn edit(doc: &mut Automerge, who: usize, v: i64) {
    let mut tx = doc.transaction();
    tx.put(ROOT, format!("k{}", v.rem_euclid(8)), v).unwrap();
    tx.put(ROOT, format!("by{who}"), v).unwrap();
    tx.commit();
}

/// Delivers `frame` (sent by peer `from`) to the other peer and applies it.
fn deliver(conns: &mut [Connection; 2], docs: &mut [Automerge; 2], from: usize, frame: &[u8]) {
    let to = 1 - from;
    match conns[to].receive(frame).unwrap() {
        Event::Sync {
            document_id,
            message,
            ..
        } => {
            conns[to]
                .receive_sync(&document_id, &mut docs[to], message)
                .unwrap();
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Exchanges messages over a clean channel until both peers are quiet; returns the rounds used.
fn clean_exchange(conns: &mut [Connection; 2], docs: &mut [Automerge; 2]) -> usize {
    for round in 0..100 {
        let mut quiet = true;
        for from in 0..2 {
            if let Some(m) = conns[from].generate(&id(), &docs[from]).unwrap() {
                quiet = false;
                deliver(conns, docs, from, &m.encode());
            }
        }
        if quiet {
            return round;
        }
    }
    panic!("no quiescence after 100 rounds");
}

fn connect() -> [Connection; 2] {
    let (a, b) = pair();
    [a, b]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Frames are dropped, duplicated and reordered while both peers keep editing; then the link
    /// is replaced by a new one (each side keeping its persisted sync state) and a clean exchange
    /// runs. Both documents must end with the same heads and the same content.
    #[test]
    fn faulty_links_converge_after_a_clean_reconnect(
        initial in (0usize..4, 0usize..4),
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        let mut docs = [Automerge::new(), Automerge::new()];
        for i in 0..initial.0 { edit(&mut docs[0], 0, i as i64); }
        for i in 0..initial.1 { edit(&mut docs[1], 1, 100 + i as i64); }
        let mut conns = connect();
        let mut channel: Vec<(usize, Vec<u8>)> = Vec::new();
        for s in steps {
            match s {
                Step::Edit(p, v) => edit(&mut docs[p], p, v),
                Step::Send(p) => {
                    if let Some(m) = conns[p].generate(&id(), &docs[p]).unwrap() {
                        channel.push((p, m.encode()));
                    }
                }
                Step::Deliver(i) if !channel.is_empty() => {
                    let (from, frame) = channel.remove(i.index(channel.len()));
                    // Reordered or duplicated frames must still be accepted.
                    deliver(&mut conns, &mut docs, from, &frame);
                }
                Step::Duplicate(i) if !channel.is_empty() => {
                    let f = channel[i.index(channel.len())].clone();
                    channel.push(f);
                }
                Step::Drop(i) if !channel.is_empty() => {
                    channel.remove(i.index(channel.len()));
                }
                _ => {}
            }
        }
        // Reconnect: new links, persisted sync state restored on each side.
        let saved: Vec<Option<Vec<u8>>> = conns.iter().map(|c| c.sync_state(&id())).collect();
        let mut conns = connect();
        for (c, s) in conns.iter_mut().zip(saved) {
            if let Some(s) = s { c.restore_sync_state(&id(), &s).unwrap(); }
        }
        clean_exchange(&mut conns, &mut docs);
        prop_assert_eq!(docs[0].get_heads(), docs[1].get_heads());
        let keys0: Vec<String> = docs[0].keys(ROOT).collect();
        let keys1: Vec<String> = docs[1].keys(ROOT).collect();
        prop_assert_eq!(&keys0, &keys1);
        for k in keys0 {
            let a = docs[0].get(ROOT, k.as_str()).unwrap().map(|(v, _)| v.as_i64());
            let b = docs[1].get(ROOT, k.as_str()).unwrap().map(|(v, _)| v.as_i64());
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn a_clean_link_converges_both_ways_and_then_stays_quiet() {
    let mut docs = [Automerge::new(), Automerge::new()];
    edit(&mut docs[0], 0, 1);
    edit(&mut docs[1], 1, 2);
    let mut conns = connect();
    let rounds = clean_exchange(&mut conns, &mut docs);
    assert!(rounds <= 4, "{rounds} rounds");
    assert_eq!(docs[0].get_heads(), docs[1].get_heads());
    assert_eq!(
        docs[0].get(ROOT, "by1").unwrap().unwrap().0.as_i64(),
        Some(2)
    );
    // Later edits flow on the same link.
    edit(&mut docs[1], 1, 3);
    clean_exchange(&mut conns, &mut docs);
    assert_eq!(
        docs[0].get(ROOT, "by1").unwrap().unwrap().0.as_i64(),
        Some(3)
    );
    assert_eq!(clean_exchange(&mut conns, &mut docs), 0);
}

/// Found by the interop harness: automerge-repo 2.5.6 (Node, no storage adapter) sends
/// `peerMetadata.storageId` as CBOR `undefined` (0xf7). The join must be accepted with the
/// storage id absent; this is the client's frame as it was captured on the socket.
#[test]
fn a_join_with_an_undefined_storage_id_is_accepted() {
    let hex = "b900046474797065646a6f696e6873656e64657249646e706565722d61327036307769666e6c706565724d65746164617461b900026973746f726167654964f76b6973457068656d6572616cf57819737570706f7274656450726f746f636f6c56657273696f6e73816131";
    let frame: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(frame.len(), 107);
    match Message::decode(&frame).unwrap() {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            metadata,
        } => {
            assert_eq!(sender_id, PeerId::from("peer-a2p60wifn"));
            assert_eq!(supported_protocol_versions, vec!["1".to_string()]);
            let m = metadata.unwrap();
            assert_eq!(m.storage_id, None);
            assert!(m.is_ephemeral);
        }
        other => panic!("expected a join, got {other:?}"),
    }
    // A null metadata map is absent metadata, not an error.
    let mut null_meta = frame.clone();
    let meta_start = 50; // the inner map after the "peerMetadata" key
    assert_eq!(&null_meta[meta_start..meta_start + 3], &[0xb9, 0x00, 0x02]);
    let meta_len = 3 + 10 + 1 + 12 + 1; // header, "storageId", f7, "isEphemeral", f5
    null_meta.splice(meta_start..meta_start + meta_len, [0xf6]);
    match Message::decode(&null_meta).unwrap() {
        Message::Join { metadata, .. } => assert!(metadata.is_none()),
        other => panic!("expected a join, got {other:?}"),
    }
}

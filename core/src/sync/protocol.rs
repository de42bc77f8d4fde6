//! The automerge-repo sync protocol, version 1, without I/O.
//!
//! # Wire format
//! Each WebSocket binary frame carries one CBOR map with a `type` key. The shapes below are those
//! of the automerge-repo library (`packages/automerge-repo/src/network/messages.ts` and
//! `packages/automerge-repo-network-websocket/src/messages.ts` in `automerge/automerge-repo`) and
//! of the Rust `samod` crate (`samod-core/src/network/wire_protocol.rs` in `alexjg/samod`), read
//! in the public sources rather than guessed:
//!
//! | `type` | fields |
//! |---|---|
//! | `join` | `senderId`, `supportedProtocolVersions: ["1"]`, `peerMetadata?: {storageId?, isEphemeral}` |
//! | `peer` | `senderId`, `targetId`, `selectedProtocolVersion: "1"`, `peerMetadata?` |
//! | `leave` | `senderId` |
//! | `request` | `senderId`, `targetId`, `documentId`, `data` (an automerge sync message) |
//! | `sync` | `senderId`, `targetId`, `documentId`, `data` (an automerge sync message) |
//! | `doc-unavailable` | `senderId`, `targetId`, `documentId` |
//! | `ephemeral` | `senderId`, `targetId`, `count`, `sessionId`, `documentId`, `data` |
//! | `error` | `message`, and `senderId`, `targetId` when the sender knows them |
//!
//! The JavaScript adapter names the metadata `peerMetadata`; the samod version read names it
//! `metadata`. We write `peerMetadata` and read either. Other types the JavaScript library may
//! send (`remote-subscription-change`, `remote-heads-changed`) decode to
//! [`Message::Unsupported`] and are ignored. `documentId` is written as a string and read as a
//! string or as 16 raw bytes (samod reads both).
//!
//! # Document ids
//! As automerge-repo makes them (`packages/automerge-repo/src/AutomergeUrl.ts`:
//! `generateAutomergeUrl` and `binaryToDocumentId`): 16 random bytes of a UUID v4, written in
//! Base58Check (Bitcoin alphabet; a 4-byte checksum, the first bytes of SHA-256(SHA-256(bytes)),
//! appended before encoding). An automerge URL is `automerge:` followed by that string.
//! See [`DocumentId`].
//!
//! # Decoding
//! [`Message::decode`] never panics. It tells a truncated frame ([`DecodeError::Incomplete`])
//! from one that can never be valid ([`DecodeError::Invalid`], [`DecodeError::MissingField`]);
//! it refuses trailing bytes and duplicate keys, and skips unknown keys (newer peers add them).
//!
//! # The per-peer state machine
//! A [`Connection`] is one peer's view of one link. It performs the handshake (the initiator sends
//! `join`, the responder answers `peer` when it supports version 1 and `error` otherwise), checks
//! that every later message comes from the peer that joined and is addressed to us, and keeps one
//! `automerge::sync::State` per document. It never touches a socket or a store: the caller feeds
//! it received frames and sends what it returns, and passes the document in when syncing.
//!
//! A peer that does not hold a document yet (no heads) opens with `request`, as automerge-repo
//! does; a peer that may not or cannot serve a document answers [`Connection::doc_unavailable`].
//! [`Connection::receive_sync_checked`] applies a sync message to a copy of the document and its
//! sync state, runs the caller's check on the copy, and keeps the result only when the check
//! passes; this is how the server validates typed documents before committing them.
//!
//! The transport is assumed reliable and ordered while a connection lives (a WebSocket). When
//! frames are lost the link is dropped and a new [`Connection`] is made; keep each document's
//! sync state across links with [`Connection::sync_state`] / [`Connection::restore_sync_state`]
//! (automerge keeps only the shared heads in that encoding), and the peers converge again (a
//! property test with dropped, duplicated and reordered frames holds this to account).
//!
//! # Example: two peers converge
//! ```
//! use automerge::{transaction::Transactable, Automerge, ReadDoc, ROOT};
//! use fitedge_core::sync::protocol::{Connection, DocumentId, Event, PeerId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The phone has a document; the server has nothing yet.
//! let mut phone_doc = Automerge::new();
//! let mut tx = phone_doc.transaction();
//! tx.put(ROOT, "title", "Morning run")?;
//! tx.commit();
//! let mut server_doc = Automerge::new();
//! let id = DocumentId::from_bytes([7; 16]);
//!
//! let (mut phone, join) = Connection::initiator(PeerId::from("phone"), None);
//! let mut server = Connection::responder(PeerId::from("server"), None);
//!
//! // Handshake: join -> peer.
//! let Event::Joined { reply, .. } = server.receive(&join.encode())? else { panic!() };
//! assert!(matches!(phone.receive(&reply.encode())?, Event::Ready { .. }));
//!
//! // Sync until neither side has anything left to say.
//! loop {
//!     let mut quiet = true;
//!     if let Some(m) = phone.generate(&id, &phone_doc)? {
//!         quiet = false;
//!         if let Event::Sync { document_id, message, .. } = server.receive(&m.encode())? {
//!             server.receive_sync(&document_id, &mut server_doc, message)?;
//!         }
//!     }
//!     if let Some(m) = server.generate(&id, &server_doc)? {
//!         quiet = false;
//!         if let Event::Sync { document_id, message, .. } = phone.receive(&m.encode())? {
//!             phone.receive_sync(&document_id, &mut phone_doc, message)?;
//!         }
//!     }
//!     if quiet { break; }
//! }
//! assert_eq!(phone_doc.get_heads(), server_doc.get_heads());
//! let (title, _) = server_doc.get(ROOT, "title")?.expect("synced");
//! assert_eq!(title.to_str(), Some("Morning run"));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

/// The only protocol version there is.
pub const PROTOCOL_VERSION: &str = "1";

// ------------------------------------------------------------------------------ identifiers

/// A document id as automerge-repo makes it: 16 bytes, shown in Base58Check.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

/// Why a document id or URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentIdError {
    #[error("not Base58: {0}")]
    Base58(String),
    #[error("Base58Check checksum mismatch")]
    Checksum,
    #[error("a document id is 16 bytes, this one has {0}")]
    Length(usize),
    #[error("not an automerge URL (automerge:<id>)")]
    Url,
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let once = ring::digest::digest(&ring::digest::SHA256, bytes);
    let twice = ring::digest::digest(&ring::digest::SHA256, once.as_ref());
    let mut out = [0; 4];
    out.copy_from_slice(&twice.as_ref()[..4]);
    out
}

impl DocumentId {
    /// A fresh id: the bytes of a random UUID v4, as `Repo.create()` makes them.
    pub fn random() -> Self {
        DocumentId(*uuid::Uuid::new_v4().as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        DocumentId(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// `automerge:<id>`.
    pub fn to_url(&self) -> String {
        format!("automerge:{self}")
    }

    /// Parses `automerge:<id>`.
    pub fn from_url(url: &str) -> Result<Self, DocumentIdError> {
        url.strip_prefix("automerge:")
            .ok_or(DocumentIdError::Url)?
            .parse()
    }

    fn from_slice(b: &[u8]) -> Result<Self, DocumentIdError> {
        <[u8; 16]>::try_from(b)
            .map(DocumentId)
            .map_err(|_| DocumentIdError::Length(b.len()))
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut payload = Vec::with_capacity(20);
        payload.extend_from_slice(&self.0);
        payload.extend_from_slice(&checksum(&self.0));
        f.write_str(&bs58::encode(payload).into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = DocumentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 16 bytes + 4 checksum bytes are at most 28 Base58 characters.
        if s.len() > 40 {
            return Err(DocumentIdError::Length(s.len()));
        }
        let raw = bs58::decode(s)
            .into_vec()
            .map_err(|e| DocumentIdError::Base58(e.to_string()))?;
        if raw.len() < 4 {
            return Err(DocumentIdError::Length(raw.len()));
        }
        let (payload, sum) = raw.split_at(raw.len() - 4);
        if checksum(payload) != sum {
            return Err(DocumentIdError::Checksum);
        }
        DocumentId::from_slice(payload)
    }
}

/// A peer id: any string the peer picks (automerge-repo uses `peer-` and random characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub String);

impl From<&str> for PeerId {
    fn from(s: &str) -> Self {
        PeerId(s.to_string())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a peer says about itself in `join` and `peer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    pub storage_id: Option<String>,
    pub is_ephemeral: bool,
}

// --------------------------------------------------------------------------------- messages

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Join {
        sender_id: PeerId,
        supported_protocol_versions: Vec<String>,
        metadata: Option<PeerMetadata>,
    },
    Peer {
        sender_id: PeerId,
        target_id: PeerId,
        selected_protocol_version: String,
        metadata: Option<PeerMetadata>,
    },
    Leave {
        sender_id: PeerId,
    },
    Request {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    Sync {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    DocUnavailable {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
    },
    Ephemeral {
        sender_id: PeerId,
        target_id: PeerId,
        count: u64,
        session_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    Error {
        sender_id: Option<PeerId>,
        target_id: Option<PeerId>,
        message: String,
    },
    /// A well-formed message of a type this implementation does not handle.
    Unsupported {
        type_name: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends in the middle of a CBOR item: it was truncated.
    #[error("incomplete message: input ends in the middle of a CBOR item")]
    Incomplete,
    /// The frame is not a valid message and never will be.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A field the message type requires is absent.
    #[error("invalid {type_name} message: missing {field}")]
    MissingField {
        type_name: String,
        field: &'static str,
    },
    #[error("invalid documentId: {0}")]
    DocumentId(#[from] DocumentIdError),
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(e: minicbor::decode::Error) -> Self {
        if e.is_end_of_input() {
            DecodeError::Incomplete
        } else {
            DecodeError::Invalid(e.to_string())
        }
    }
}

#[derive(Default)]
struct Fields {
    type_name: Option<String>,
    sender_id: Option<String>,
    target_id: Option<String>,
    document_id: Option<DocumentId>,
    data: Option<Vec<u8>>,
    versions: Option<Vec<String>>,
    selected: Option<String>,
    metadata: Option<PeerMetadata>,
    message: Option<String>,
    session_id: Option<String>,
    count: Option<u64>,
}

fn set<T>(slot: &mut Option<T>, v: T, key: &str) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Invalid(format!("duplicate key {key:?}")));
    }
    *slot = Some(v);
    Ok(())
}

/// Calls `f` once per entry of a definite or indefinite map or array, `len` from `map()`/`array()`.
fn for_each<'b>(
    d: &mut Decoder<'b>,
    len: Option<u64>,
    mut f: impl FnMut(&mut Decoder<'b>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    match len {
        Some(n) => {
            for _ in 0..n {
                f(d)?;
            }
        }
        None => loop {
            if d.datatype()? == Type::Break {
                d.skip()?;
                break;
            }
            f(d)?;
        },
    }
    Ok(())
}

/// Skips a CBOR `null` or `undefined` and says so: an optional field sent that way is absent.
/// automerge-repo 2.x writes `storageId: undefined` when the client has no storage (browsers,
/// Node without a storage adapter), so refusing it would refuse every such client.
fn nullish(d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
    if matches!(d.datatype()?, Type::Null | Type::Undefined) {
        d.skip()?;
        return Ok(true);
    }
    Ok(false)
}

fn decode_metadata(d: &mut Decoder<'_>) -> Result<PeerMetadata, DecodeError> {
    let mut m = PeerMetadata::default();
    let len = d.map()?;
    for_each(d, len, |d| {
        match d.str()? {
            "storageId" => {
                if !nullish(d)? {
                    m.storage_id = Some(d.str()?.to_string());
                }
            }
            "isEphemeral" => {
                if !nullish(d)? {
                    m.is_ephemeral = d.bool()?;
                }
            }
            _ => d.skip()?,
        }
        Ok(())
    })?;
    Ok(m)
}

impl Message {
    /// The `type` string on the wire.
    pub fn type_name(&self) -> &str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Leave { .. } => "leave",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::Error { .. } => "error",
            Message::Unsupported { type_name } => type_name,
        }
    }

    /// Decodes one frame. Never panics, whatever the input.
    pub fn decode(input: &[u8]) -> Result<Message, DecodeError> {
        let mut d = Decoder::new(input);
        let mut f = Fields::default();
        let len = match d.datatype()? {
            Type::Map | Type::MapIndef => d.map()?,
            t => return Err(DecodeError::Invalid(format!("expected a map, found {t}"))),
        };
        for_each(&mut d, len, |d| {
            let key = match d.datatype()? {
                Type::String => d.str()?,
                _ => {
                    // Keys other than text strings are not ours; skip key and value.
                    d.skip()?;
                    d.skip()?;
                    return Ok(());
                }
            };
            match key {
                "type" => set(&mut f.type_name, d.str()?.to_string(), key),
                "senderId" => set(&mut f.sender_id, d.str()?.to_string(), key),
                "targetId" => set(&mut f.target_id, d.str()?.to_string(), key),
                "documentId" => {
                    let id = match d.datatype()? {
                        Type::Bytes => DocumentId::from_slice(d.bytes()?)?,
                        _ => d.str()?.parse()?,
                    };
                    set(&mut f.document_id, id, key)
                }
                "data" => set(&mut f.data, d.bytes()?.to_vec(), key),
                "supportedProtocolVersions" => {
                    let mut v = Vec::new();
                    let n = d.array()?;
                    for_each(d, n, |d| {
                        v.push(d.str()?.to_string());
                        Ok(())
                    })?;
                    set(&mut f.versions, v, key)
                }
                "selectedProtocolVersion" => set(&mut f.selected, d.str()?.to_string(), key),
                "peerMetadata" | "metadata" => {
                    if nullish(d)? {
                        Ok(())
                    } else {
                        let m = decode_metadata(d)?;
                        set(&mut f.metadata, m, key)
                    }
                }
                "message" => set(&mut f.message, d.str()?.to_string(), key),
                "sessionId" => set(&mut f.session_id, d.str()?.to_string(), key),
                "count" => set(&mut f.count, d.u64()?, key),
                _ => Ok(d.skip()?),
            }
        })?;
        if d.position() != input.len() {
            return Err(DecodeError::Invalid(format!(
                "{} trailing bytes after the message",
                input.len() - d.position()
            )));
        }
        let type_name = f.type_name.take().ok_or(DecodeError::MissingField {
            type_name: "untyped".into(),
            field: "type",
        })?;
        let missing = |field: &'static str| DecodeError::MissingField {
            type_name: type_name.clone(),
            field,
        };
        let sender = f.sender_id.take().map(PeerId);
        let target = f.target_id.take().map(PeerId);
        Ok(match type_name.as_str() {
            "join" => Message::Join {
                sender_id: sender.ok_or_else(|| missing("senderId"))?,
                supported_protocol_versions: f
                    .versions
                    .ok_or_else(|| missing("supportedProtocolVersions"))?,
                metadata: f.metadata,
            },
            "peer" => Message::Peer {
                sender_id: sender.ok_or_else(|| missing("senderId"))?,
                target_id: target.ok_or_else(|| missing("targetId"))?,
                selected_protocol_version: f
                    .selected
                    .ok_or_else(|| missing("selectedProtocolVersion"))?,
                metadata: f.metadata,
            },
            "leave" => Message::Leave {
                sender_id: sender.ok_or_else(|| missing("senderId"))?,
            },
            "request" | "sync" => {
                let sender_id = sender.ok_or_else(|| missing("senderId"))?;
                let target_id = target.ok_or_else(|| missing("targetId"))?;
                let document_id = f.document_id.ok_or_else(|| missing("documentId"))?;
                let data = f.data.ok_or_else(|| missing("data"))?;
                if type_name == "request" {
                    Message::Request {
                        sender_id,
                        target_id,
                        document_id,
                        data,
                    }
                } else {
                    Message::Sync {
                        sender_id,
                        target_id,
                        document_id,
                        data,
                    }
                }
            }
            "doc-unavailable" => Message::DocUnavailable {
                sender_id: sender.ok_or_else(|| missing("senderId"))?,
                target_id: target.ok_or_else(|| missing("targetId"))?,
                document_id: f.document_id.ok_or_else(|| missing("documentId"))?,
            },
            "ephemeral" => Message::Ephemeral {
                sender_id: sender.ok_or_else(|| missing("senderId"))?,
                target_id: target.ok_or_else(|| missing("targetId"))?,
                count: f.count.ok_or_else(|| missing("count"))?,
                session_id: f.session_id.ok_or_else(|| missing("sessionId"))?,
                document_id: f.document_id.ok_or_else(|| missing("documentId"))?,
                data: f.data.ok_or_else(|| missing("data"))?,
            },
            "error" => Message::Error {
                sender_id: sender,
                target_id: target,
                message: f.message.ok_or_else(|| missing("message"))?,
            },
            _ => Message::Unsupported { type_name },
        })
    }

    /// Encodes the message as one CBOR map.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        // Writing into a Vec cannot fail; the Result only mirrors the generic writer.
        if self.encode_into(&mut e).is_err() {
            return Vec::new();
        }
        e.into_writer()
    }

    fn encode_into(
        &self,
        e: &mut Encoder<Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
        fn meta(
            e: &mut Encoder<Vec<u8>>,
            m: &PeerMetadata,
        ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
            e.str("peerMetadata")?;
            e.map(if m.storage_id.is_some() { 2 } else { 1 })?;
            if let Some(s) = &m.storage_id {
                e.str("storageId")?.str(s)?;
            }
            e.str("isEphemeral")?.bool(m.is_ephemeral)?;
            Ok(())
        }
        match self {
            Message::Join {
                sender_id,
                supported_protocol_versions,
                metadata,
            } => {
                e.map(3 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("join")?;
                e.str("senderId")?.str(&sender_id.0)?;
                e.str("supportedProtocolVersions")?
                    .array(supported_protocol_versions.len() as u64)?;
                for v in supported_protocol_versions {
                    e.str(v)?;
                }
                if let Some(m) = metadata {
                    meta(e, m)?;
                }
            }
            Message::Peer {
                sender_id,
                target_id,
                selected_protocol_version,
                metadata,
            } => {
                e.map(4 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("peer")?;
                e.str("senderId")?.str(&sender_id.0)?;
                e.str("targetId")?.str(&target_id.0)?;
                e.str("selectedProtocolVersion")?
                    .str(selected_protocol_version)?;
                if let Some(m) = metadata {
                    meta(e, m)?;
                }
            }
            Message::Leave { sender_id } => {
                e.map(2)?;
                e.str("type")?.str("leave")?;
                e.str("senderId")?.str(&sender_id.0)?;
            }
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
            | Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            } => {
                e.map(5)?;
                e.str("type")?.str(self.type_name())?;
                e.str("senderId")?.str(&sender_id.0)?;
                e.str("targetId")?.str(&target_id.0)?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("data")?.bytes(data)?;
            }
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => {
                e.map(4)?;
                e.str("type")?.str("doc-unavailable")?;
                e.str("senderId")?.str(&sender_id.0)?;
                e.str("targetId")?.str(&target_id.0)?;
                e.str("documentId")?.str(&document_id.to_string())?;
            }
            Message::Ephemeral {
                sender_id,
                target_id,
                count,
                session_id,
                document_id,
                data,
            } => {
                e.map(7)?;
                e.str("type")?.str("ephemeral")?;
                e.str("senderId")?.str(&sender_id.0)?;
                e.str("targetId")?.str(&target_id.0)?;
                e.str("count")?.u64(*count)?;
                e.str("sessionId")?.str(session_id)?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("data")?.bytes(data)?;
            }
            Message::Error {
                sender_id,
                target_id,
                message,
            } => {
                e.map(2 + u64::from(sender_id.is_some()) + u64::from(target_id.is_some()))?;
                e.str("type")?.str("error")?;
                if let Some(s) = sender_id {
                    e.str("senderId")?.str(&s.0)?;
                }
                if let Some(t) = target_id {
                    e.str("targetId")?.str(&t.0)?;
                }
                e.str("message")?.str(message)?;
            }
            Message::Unsupported { type_name } => {
                e.map(1)?;
                e.str("type")?.str(type_name)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------- state machine

/// Which end of the link this peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends `join` (the device).
    Initiator,
    /// Answers `peer` (the server).
    Responder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshake,
    Ready,
    Closed,
}

/// What a received frame means for the caller.
#[derive(Debug)]
pub enum Event {
    /// (Responder) a peer joined; send `reply` (a `peer` message).
    Joined {
        peer: PeerId,
        metadata: Option<PeerMetadata>,
        reply: Message,
    },
    /// (Initiator) the responder accepted; documents may be synced.
    Ready {
        peer: PeerId,
        metadata: Option<PeerMetadata>,
    },
    /// An automerge sync message for a document; `request` when the peer does not hold it yet.
    /// Apply with [`Connection::receive_sync`] or [`Connection::receive_sync_checked`].
    Sync {
        document_id: DocumentId,
        message: sync::Message,
        request: bool,
    },
    /// The peer does not have (or will not share) the document.
    DocUnavailable { document_id: DocumentId },
    /// An ephemeral message (not stored; the caller may relay it).
    Ephemeral {
        document_id: DocumentId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
    /// The peer reported an error and will close the link.
    RemoteError { message: String },
    /// The peer is leaving.
    Left,
    /// A message type we do not handle; ignore it.
    Ignored { type_name: String },
}

/// Why the connection refused a frame. The caller answers with [`Connection::error`] (the
/// message is safe to send) and, except for [`ProtocolError::Rejected`], closes the link.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("unexpected {0} message during the handshake")]
    NotReady(String),
    #[error("unexpected {0} message after the handshake")]
    UnexpectedMessage(String),
    #[error("no supported protocol version (we speak {PROTOCOL_VERSION})")]
    UnsupportedVersion,
    #[error("message from {found}, but the peer joined as {expected}")]
    WrongSender { expected: PeerId, found: PeerId },
    #[error("message for {found}, but we are {expected}")]
    WrongTarget { expected: PeerId, found: PeerId },
    #[error("the connection is closed")]
    Closed,
    #[error("invalid automerge sync message: {0}")]
    BadSyncMessage(String),
    #[error("automerge refused the sync message: {0}")]
    Apply(String),
    /// The caller's check refused the document the message would produce; nothing was kept.
    #[error("change refused: {0}")]
    Rejected(String),
}

/// One peer's side of one link. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    local: PeerId,
    metadata: Option<PeerMetadata>,
    role: Role,
    phase: Phase,
    remote: Option<PeerId>,
    docs: HashMap<DocumentId, DocLink>,
}

#[derive(Debug, Default)]
struct DocLink {
    state: sync::State,
    /// The peer has sent us something about this document on this link.
    heard: bool,
}

impl Connection {
    /// The initiating side, with the `join` message to send first.
    pub fn initiator(local: PeerId, metadata: Option<PeerMetadata>) -> (Self, Message) {
        let join = Message::Join {
            sender_id: local.clone(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_string()],
            metadata: metadata.clone(),
        };
        (Self::new(local, metadata, Role::Initiator), join)
    }

    /// The answering side; it waits for `join`.
    pub fn responder(local: PeerId, metadata: Option<PeerMetadata>) -> Self {
        Self::new(local, metadata, Role::Responder)
    }

    fn new(local: PeerId, metadata: Option<PeerMetadata>, role: Role) -> Self {
        Connection {
            local,
            metadata,
            role,
            phase: Phase::Handshake,
            remote: None,
            docs: HashMap::new(),
        }
    }

    pub fn local_peer(&self) -> &PeerId {
        &self.local
    }

    /// The other peer, once the handshake is done.
    pub fn remote_peer(&self) -> Option<&PeerId> {
        self.remote.as_ref()
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Decodes and handles one received frame.
    pub fn receive(&mut self, frame: &[u8]) -> Result<Event, ProtocolError> {
        let msg = Message::decode(frame)?;
        self.receive_message(msg)
    }

    /// Handles one decoded message.
    pub fn receive_message(&mut self, msg: Message) -> Result<Event, ProtocolError> {
        match self.phase {
            Phase::Closed => Err(ProtocolError::Closed),
            Phase::Handshake => self.handshake(msg),
            Phase::Ready => self.ready(msg),
        }
    }

    fn handshake(&mut self, msg: Message) -> Result<Event, ProtocolError> {
        match (self.role, msg) {
            (
                Role::Responder,
                Message::Join {
                    sender_id,
                    supported_protocol_versions,
                    metadata,
                },
            ) => {
                if !supported_protocol_versions
                    .iter()
                    .any(|v| v == PROTOCOL_VERSION)
                {
                    self.phase = Phase::Closed;
                    return Err(ProtocolError::UnsupportedVersion);
                }
                self.phase = Phase::Ready;
                self.remote = Some(sender_id.clone());
                Ok(Event::Joined {
                    reply: Message::Peer {
                        sender_id: self.local.clone(),
                        target_id: sender_id.clone(),
                        selected_protocol_version: PROTOCOL_VERSION.to_string(),
                        metadata: self.metadata.clone(),
                    },
                    peer: sender_id,
                    metadata,
                })
            }
            (
                Role::Initiator,
                Message::Peer {
                    sender_id,
                    target_id,
                    selected_protocol_version,
                    metadata,
                },
            ) => {
                if target_id != self.local {
                    return Err(ProtocolError::WrongTarget {
                        expected: self.local.clone(),
                        found: target_id,
                    });
                }
                if selected_protocol_version != PROTOCOL_VERSION {
                    self.phase = Phase::Closed;
                    return Err(ProtocolError::UnsupportedVersion);
                }
                self.phase = Phase::Ready;
                self.remote = Some(sender_id.clone());
                Ok(Event::Ready {
                    peer: sender_id,
                    metadata,
                })
            }
            (_, Message::Error { message, .. }) => {
                self.phase = Phase::Closed;
                Ok(Event::RemoteError { message })
            }
            (_, other) => Err(ProtocolError::NotReady(other.type_name().to_string())),
        }
    }

    fn check_route(&self, sender: &PeerId, target: &PeerId) -> Result<(), ProtocolError> {
        if let Some(remote) = &self.remote {
            if sender != remote {
                return Err(ProtocolError::WrongSender {
                    expected: remote.clone(),
                    found: sender.clone(),
                });
            }
        }
        if target != &self.local {
            return Err(ProtocolError::WrongTarget {
                expected: self.local.clone(),
                found: target.clone(),
            });
        }
        Ok(())
    }

    fn ready(&mut self, msg: Message) -> Result<Event, ProtocolError> {
        match msg {
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            } => self.incoming_sync(&sender_id, &target_id, document_id, &data, true),
            Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            } => self.incoming_sync(&sender_id, &target_id, document_id, &data, false),
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => {
                self.check_route(&sender_id, &target_id)?;
                Ok(Event::DocUnavailable { document_id })
            }
            Message::Ephemeral {
                sender_id,
                target_id,
                count,
                session_id,
                document_id,
                data,
            } => {
                self.check_route(&sender_id, &target_id)?;
                Ok(Event::Ephemeral {
                    document_id,
                    session_id,
                    count,
                    data,
                })
            }
            Message::Error { message, .. } => {
                self.phase = Phase::Closed;
                Ok(Event::RemoteError { message })
            }
            Message::Leave { sender_id } => {
                if Some(&sender_id) != self.remote.as_ref() {
                    return Err(ProtocolError::WrongSender {
                        expected: self.remote.clone().unwrap_or_else(|| PeerId::from("")),
                        found: sender_id,
                    });
                }
                self.phase = Phase::Closed;
                Ok(Event::Left)
            }
            Message::Unsupported { type_name } => Ok(Event::Ignored { type_name }),
            other @ (Message::Join { .. } | Message::Peer { .. }) => Err(
                ProtocolError::UnexpectedMessage(other.type_name().to_string()),
            ),
        }
    }

    fn incoming_sync(
        &mut self,
        sender_id: &PeerId,
        target_id: &PeerId,
        document_id: DocumentId,
        data: &[u8],
        request: bool,
    ) -> Result<Event, ProtocolError> {
        self.check_route(sender_id, target_id)?;
        let message = sync::Message::decode(data)
            .map_err(|e| ProtocolError::BadSyncMessage(e.to_string()))?;
        self.docs.entry(document_id).or_default().heard = true;
        Ok(Event::Sync {
            document_id,
            message,
            request,
        })
    }

    /// Applies a received sync message to `doc` with this peer's sync state for the document.
    pub fn receive_sync(
        &mut self,
        document_id: &DocumentId,
        doc: &mut Automerge,
        message: sync::Message,
    ) -> Result<(), ProtocolError> {
        let link = self.docs.entry(*document_id).or_default();
        doc.receive_sync_message(&mut link.state, message)
            .map_err(|e| ProtocolError::Apply(e.to_string()))
    }

    /// Applies a received sync message to a copy of `doc` and of the sync state, runs `check`
    /// on the copy, and keeps both only when `check` passes. On refusal `doc` and the sync state
    /// are untouched and the error is [`ProtocolError::Rejected`].
    pub fn receive_sync_checked<E: fmt::Display>(
        &mut self,
        document_id: &DocumentId,
        doc: &mut Automerge,
        message: sync::Message,
        check: impl FnOnce(&Automerge, &Automerge) -> Result<(), E>,
    ) -> Result<(), ProtocolError> {
        let link = self.docs.entry(*document_id).or_default();
        let mut state = link.state.clone();
        let mut copy = doc.clone();
        copy.receive_sync_message(&mut state, message)
            .map_err(|e| ProtocolError::Apply(e.to_string()))?;
        if copy.get_heads() != doc.get_heads() {
            check(doc, &copy).map_err(|e| ProtocolError::Rejected(e.to_string()))?;
        }
        *doc = copy;
        link.state = state;
        Ok(())
    }

    /// The next message to send about `doc`, if any: `request` while we hold nothing of it and
    /// the peer has not spoken about it yet, `sync` otherwise.
    pub fn generate(
        &mut self,
        document_id: &DocumentId,
        doc: &Automerge,
    ) -> Result<Option<Message>, ProtocolError> {
        self.require_ready()?;
        let (sender_id, target_id) = self.route();
        let link = self.docs.entry(*document_id).or_default();
        let Some(m) = doc.generate_sync_message(&mut link.state) else {
            return Ok(None);
        };
        let data = m.encode();
        let request = doc.get_heads().is_empty() && !link.heard;
        Ok(Some(if request {
            Message::Request {
                sender_id,
                target_id,
                document_id: *document_id,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id: *document_id,
                data,
            }
        }))
    }

    /// `doc-unavailable` for a document we do not have or the peer may not see.
    pub fn doc_unavailable(&mut self, document_id: &DocumentId) -> Result<Message, ProtocolError> {
        self.require_ready()?;
        let (sender_id, target_id) = self.route();
        // Forget the link's state: a later request starts afresh.
        self.docs.remove(document_id);
        Ok(Message::DocUnavailable {
            sender_id,
            target_id,
            document_id: *document_id,
        })
    }

    /// An `error` message for the peer (the connection should be closed after sending it).
    pub fn error(&mut self, message: impl Into<String>) -> Message {
        self.phase = Phase::Closed;
        Message::Error {
            sender_id: Some(self.local.clone()),
            target_id: self.remote.clone(),
            message: message.into(),
        }
    }

    /// The sync state to keep for `document_id` across links (automerge's persistent encoding:
    /// the shared heads only).
    pub fn sync_state(&self, document_id: &DocumentId) -> Option<Vec<u8>> {
        self.docs.get(document_id).map(|l| l.state.encode())
    }

    /// Restores a state kept with [`Connection::sync_state`] before syncing a document.
    pub fn restore_sync_state(
        &mut self,
        document_id: &DocumentId,
        encoded: &[u8],
    ) -> Result<(), ProtocolError> {
        let state = sync::State::decode(encoded)
            .map_err(|e| ProtocolError::BadSyncMessage(e.to_string()))?;
        self.docs.entry(*document_id).or_default().state = state;
        Ok(())
    }

    /// Documents this link has exchanged messages about.
    pub fn documents(&self) -> impl Iterator<Item = &DocumentId> {
        self.docs.keys()
    }

    fn require_ready(&self) -> Result<(), ProtocolError> {
        match self.phase {
            Phase::Ready => Ok(()),
            Phase::Handshake => Err(ProtocolError::NotReady("outgoing".into())),
            Phase::Closed => Err(ProtocolError::Closed),
        }
    }

    fn route(&self) -> (PeerId, PeerId) {
        (
            self.local.clone(),
            self.remote.clone().unwrap_or_else(|| PeerId::from("")),
        )
    }
}

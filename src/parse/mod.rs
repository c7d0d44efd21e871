//! Bytes → records → rule tables, for NSG v1, NSG v2 and VNet flow logs.
//!
//! A blob is deserialized with serde_json straight from the byte buffer with borrowed
//! strings (`Cow`, so an escaped string still works). Records are streamed: each one is
//! deserialized, its tuples parsed into a reused buffer, handed to a [`TableSink`] one
//! rule table at a time, and dropped before the next record is read. Nothing per tuple is
//! allocated. The family is decided per record (`properties.Version` changes inside real
//! blobs; NSG and VNet records may share a file) and the field count checked per tuple.
//!
//! Shapes tolerated beside the standard `{"records":[…]}`: a UTF-8 BOM, a bare record, one
//! record (or wrapper) per line, a top-level array, and a block fragment that starts with
//! `,`. A blob that breaks part-way keeps every complete record before the break and
//! reports the byte offset; one that is not JSON, or JSON of another schema, fails with
//! the parser's line and column. See `../shared/FORMATS.md`.

pub mod buffer;
pub mod compressed;
pub mod dedup;
pub mod ledger;
pub mod tuple;

pub use buffer::TableBuffer;
pub use ledger::{BlobProblem, BlobProblemKind, Ledger, RejectExample};
pub use tuple::{parse_tuple, RejectReason, TupleError};

use crate::aggregate::traffic::HOUR_MS;
use crate::hash::HSet;
use crate::model::{last_segment, subscription_of, Family, FlowTuple, GroupContext};
use crate::text::term_safe;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use tuple::{MAX_TIME_MS, MIN_TIME_MS};

/// One rule's tuples from one record and one NIC (NSG logs) or ACL (VNet logs).
#[derive(Debug)]
pub struct RuleTable<'a> {
    pub ctx: GroupContext<'a>,
    /// Accepted tuples, in log order (duplicates dropped only under `dedup`).
    pub tuples: &'a [FlowTuple],
    /// For each tuple, its 0-based index in the `flowTuples` array it came from.
    pub indices: &'a [u32],
}

/// Receives rule tables as a blob is parsed.
pub trait TableSink {
    fn table(&mut self, table: &RuleTable<'_>);
}

/// What the parser needs to know besides the bytes.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// Drop exact duplicate records and tuples (within a blob, rule and NIC/ACL).
    /// Duplicates are counted in the ledger either way.
    pub dedup: bool,
    /// Caps on a blob's size, as stored or decompressed.
    pub limits: compressed::Limits,
    /// Keep every rejected tuple in the ledger's `all_rejects` (`--rejects FILE`).
    pub keep_rejects: bool,
}

/// Values taken from the blob's path, used when the content lacks them.
#[derive(Clone, Debug, Default)]
pub struct PathDefaults<'a> {
    pub nsg: &'a str,
    pub subscription: &'a str,
    pub mac: &'a str,
    /// Start of the blob's hour from its path (Unix ms), when the path names one.
    pub hour_ms: Option<i64>,
}

/// Reusable per-thread buffers.
#[derive(Default)]
pub struct Scratch {
    tuples: Vec<FlowTuple>,
    indices: Vec<u32>,
}

// ---------------------------------------------------------------- record structure ----

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow, default, deserialize_with = "text_field")]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text_field")]
    category: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        rename = "resourceId",
        deserialize_with = "text_field"
    )]
    resource_id: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        rename = "macAddress",
        deserialize_with = "text_field"
    )]
    mac_address: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "obj_field")]
    properties: Option<NsgProperties<'a>>,
    #[serde(default, rename = "flowLogVersion", deserialize_with = "version")]
    flow_log_version: Option<Ver>,
    #[serde(
        borrow,
        default,
        rename = "flowLogResourceID",
        deserialize_with = "text_field"
    )]
    flow_log_resource_id: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        rename = "targetResourceID",
        deserialize_with = "text_field"
    )]
    target_resource_id: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        rename = "flowRecords",
        deserialize_with = "obj_field"
    )]
    flow_records: Option<VnetFlowRecords<'a>>,
    /// A `{"records": [...]}` wrapper whose `records` is not its first key is read as a
    /// record first: its records land here.
    #[serde(borrow, default)]
    records: Option<Vec<NotedRecord<'a>>>,
}

#[derive(Deserialize)]
struct NsgProperties<'a> {
    #[serde(default, rename = "Version", deserialize_with = "version")]
    version: Option<Ver>,
    /// `None` when the key is absent: NSG event and rule-counter logs have `properties`
    /// without `flows`.
    #[serde(borrow, default, deserialize_with = "opt_obj_list")]
    flows: Option<Vec<NsgRuleFlows<'a>>>,
}

#[derive(Deserialize)]
struct NsgRuleFlows<'a> {
    #[serde(borrow, default, deserialize_with = "name_field")]
    rule: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "obj_list")]
    flows: Vec<NsgMacFlows<'a>>,
}

#[derive(Deserialize)]
struct NsgMacFlows<'a> {
    #[serde(borrow, default, deserialize_with = "text_field")]
    mac: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        rename = "flowTuples",
        deserialize_with = "tuples_field"
    )]
    flow_tuples: Tuples<'a>,
}

#[derive(Deserialize)]
struct VnetFlowRecords<'a> {
    #[serde(borrow, default, deserialize_with = "obj_list")]
    flows: Vec<VnetAclFlows<'a>>,
}

#[derive(Deserialize)]
struct VnetAclFlows<'a> {
    #[serde(borrow, default, rename = "aclID", deserialize_with = "name_field")]
    acl_id: Cow<'a, str>,
    #[serde(borrow, default, rename = "flowGroups", deserialize_with = "obj_list")]
    flow_groups: Vec<VnetFlowGroup<'a>>,
}

#[derive(Deserialize)]
struct VnetFlowGroup<'a> {
    #[serde(borrow, default, deserialize_with = "name_field")]
    rule: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        rename = "flowTuples",
        deserialize_with = "tuples_field"
    )]
    flow_tuples: Tuples<'a>,
}

// ------------------------------------------------------------------- wrong shapes ----
//
// A field of the wrong JSON type (`"properties": "x"`, a rule that is a number, a record
// that is a string) would fail serde's derived structs and with them every record after it.
// Instead such a part is skipped and noted here, and the record is counted as malformed
// (`records_malformed`, with the first note as a blob warning). serde gives a field
// deserializer no context to write to, so the notes of the record being read collect in a
// per-thread list that `Handler::record` takes after each record.

thread_local! {
    static SHAPE_NOTES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn note_shape(what: String) {
    SHAPE_NOTES.with(|n| n.borrow_mut().push(what));
}

fn take_shape_notes() -> Vec<String> {
    SHAPE_NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
}

/// One item of a `records` array with the wrong-shape notes made while reading it (`rec` is
/// `None` when the item is no object).
struct NotedRecord<'a> {
    rec: Option<RawRecord<'a>>,
    notes: Vec<String>,
}

impl<'de: 'a, 'a> Deserialize<'de> for NotedRecord<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let before = take_shape_notes();
        let rec = Obj::<RawRecord<'a>>::deserialize(d);
        let mut notes = take_shape_notes();
        SHAPE_NOTES.with(|n| *n.borrow_mut() = before);
        let rec = rec?.0;
        if rec.is_none() && notes.is_empty() {
            notes.push("a record is null, not an object".to_string());
        }
        Ok(NotedRecord { rec, notes })
    }
}

/// What a JSON value is, for the messages.
struct Kind;

impl<'de> Visitor<'de> for Kind {
    type Value = &'static str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok("a boolean")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok("a number")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok("an array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        Ok("an object")
    }
}

/// The scalar `visit_*` methods of a shape visitor: each says what the value was
/// ([`Kind`]) to the visitor's `other`.
macro_rules! scalars_are_other {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.other(Kind.visit_bool(v)?)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.other(Kind.visit_u64(v)?)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.other(Kind.visit_i64(v)?)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.other(Kind.visit_f64(v)?)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.other(Kind.visit_str(v)?)
        }
    };
}

/// An object-shaped value read as `T`, or `None` (noted) when it is another JSON type.
/// Wraps the items of the arrays of records, rules and groups, and the object fields.
struct Obj<T>(Option<T>);

/// The name an [`Obj`] is noted under.
trait Named {
    const NAME: &'static str;
}

impl<'de, T: Deserialize<'de> + Named> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Named> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{} as an object", T::NAME)
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(a)).map(|t| Obj(Some(t)))
            }
            scalars_are_other!();
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                let k = Kind.visit_seq(a)?;
                self.other(k)
            }
        }
        impl<T: Named> V<T> {
            fn other<E>(self, kind: &str) -> Result<Obj<T>, E> {
                note_shape(format!("{} is {kind}, not an object", T::NAME));
                Ok(Obj(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An object field that may be of the wrong type (noted, then `None`).
fn obj_field<'de, D: Deserializer<'de>, T: Deserialize<'de> + Named>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Obj::<T>::deserialize(d)?.0)
}

/// An array of objects that may itself, or any of whose items may, be of the wrong type:
/// the good items are kept, the rest noted.
fn obj_list<'de, D: Deserializer<'de>, T: Deserialize<'de> + Named>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de> + Named> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an array of {}", T::NAME)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut v = Vec::new();
            while let Some(x) = a.next_element::<Obj<T>>()? {
                v.extend(x.0);
            }
            Ok(v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        scalars_are_other!();
        fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
            let k = Kind.visit_map(a)?;
            self.other(k)
        }
    }
    impl<T: Named> V<T> {
        fn other<E>(self, kind: &str) -> Result<Vec<T>, E> {
            note_shape(format!("the list of {} is {kind}, not an array", T::NAME));
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// `Some(obj_list)`: a list whose absence means something (NSG `properties.flows`).
fn opt_obj_list<'de, D: Deserializer<'de>, T: Deserialize<'de> + Named>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    obj_list(d).map(Some)
}

/// A text field (a name, an id, a time) that may be of another JSON type: noted, then
/// absent. Borrows from the input when it can.
fn text_field<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    text_or_note(d, "a text field")
}

fn text_or_note<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
    name: &'static str,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    let t = Text::deserialize(d)?;
    if t.1 {
        Ok(Some(t.0))
    } else {
        note_shape(format!("{name}: {}", t.0.replace("the tuple", "the value")));
        Ok(None)
    }
}

/// A rule name or ACL id: a text, else noted and empty.
fn name_field<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Cow<'a, str>, D::Error> {
    Ok(text_or_note(d, "a rule name or id")?.unwrap_or_default())
}

impl Named for RawRecord<'_> {
    const NAME: &'static str = "a record";
}
impl Named for NsgProperties<'_> {
    const NAME: &'static str = "properties";
}
impl Named for NsgRuleFlows<'_> {
    const NAME: &'static str = "a rule (properties.flows item)";
}
impl Named for NsgMacFlows<'_> {
    const NAME: &'static str = "a rule's flows item";
}
impl Named for VnetFlowRecords<'_> {
    const NAME: &'static str = "flowRecords";
}
impl Named for VnetAclFlows<'_> {
    const NAME: &'static str = "a flowRecords.flows item";
}
impl Named for VnetFlowGroup<'_> {
    const NAME: &'static str = "a flowGroups item";
}

/// A string that borrows from the input when it can. (`Cow<str>` alone always allocates
/// inside a `Vec`: serde's `#[serde(borrow)]` only reaches direct fields.) An item that is
/// not a string is kept as what it is (`a number`), with `false`: rejected as
/// `not_a_string`, and the items after it are read.
#[derive(Debug, Hash)]
struct Text<'a>(Cow<'a, str>, bool);

/// The all-zero ACL id VNet flow logs write for Azure's own rules (`PlatformRule`: DNS,
/// the metadata service, health probes), which no NSG holds.
pub const PLATFORM_ACL_ID: &str = "00000000-0000-0000-0000-000000000000";

/// What every output calls the all-zero ACL: it is no NSG of the user's.
pub const PLATFORM_ACL_NAME: &str = "Azure platform";

/// The NSG name of a VNet `aclID`: its last segment, or [`PLATFORM_ACL_NAME`].
fn vnet_acl_name(acl_id: &str) -> &str {
    if acl_id == PLATFORM_ACL_ID {
        PLATFORM_ACL_NAME
    } else {
        last_segment(acl_id)
    }
}

/// `flowTuples` as its raw JSON text, borrowed from the blob ("" when absent). Its items
/// are parsed where they are used ([`each_tuple`]), one at a time: a record that holds a
/// whole blob of tuples costs no memory per tuple while it is read.
#[derive(Clone, Copy, Default)]
struct Tuples<'a>(&'a str);

fn tuples_field<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Tuples<'a>, D::Error> {
    let raw = <&'a serde_json::value::RawValue>::deserialize(d)?;
    Ok(Tuples(raw.get()))
}

/// Call `f` with each item of a raw `flowTuples` text and its index: the tuple texts
/// (borrowed from the blob when unescaped), or, when `flowTuples` is no array, one item
/// saying what it is. `null` and an absent `flowTuples` have no items.
///
/// The usual array (unescaped strings) is read by a scan of its own; at anything else (an
/// escape, an item that is no string) serde_json reads the array from there on.
#[inline]
fn each_tuple<'de>(raw: &'de str, f: &mut impl FnMut(usize, Text<'de>)) {
    let b = raw.as_bytes();
    let ws = |b: &[u8], mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
            i += 1;
        }
        i
    };
    let mut i = ws(b, 0);
    let mut k = 0;
    if b.get(i) == Some(&b'[') {
        i = ws(b, i + 1);
        if b.get(i) == Some(&b']') {
            return;
        }
        while b.get(i) == Some(&b'"') {
            let start = i + 1;
            let Some(n) = memchr::memchr2(b'"', b'\\', &b[start..]) else {
                break;
            };
            if b[start + n] != b'"' {
                break;
            }
            // The quotes are ASCII, so both ends are character boundaries.
            f(k, Text(Cow::Borrowed(&raw[start..start + n]), true));
            k += 1;
            i = ws(b, start + n + 1);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b']') => return,
                _ => break,
            }
        }
    }
    let mut skip = |i: usize, t: Text<'de>| {
        if i >= k {
            f(i, t)
        }
    };
    each_tuple_json(raw, &mut skip);
}

/// [`each_tuple`] by serde_json.
fn each_tuple_json<'de>(raw: &'de str, f: &mut dyn FnMut(usize, Text<'de>)) {
    struct Items<'f, 'de>(&'f mut dyn FnMut(usize, Text<'de>));
    impl<'de> Visitor<'de> for Items<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of tuple strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(t) = a.next_element::<Text<'de>>()? {
                (self.0)(i, t);
                i += 1;
            }
            Ok(())
        }
    }
    // `raw` is one complete JSON value the blob's parse has already checked: reading it
    // again cannot fail.
    let mut de = serde_json::Deserializer::from_str(raw);
    let r = match raw.trim_start().as_bytes().first() {
        None => Ok(()),
        Some(b'[') => serde::Deserializer::deserialize_seq(&mut de, Items(f)),
        Some(b'"') => <Cow<str>>::deserialize(&mut de).map(|s| {
            let what = format!("flowTuples is a string ({:?}), not an array", cut(&s));
            f(0, not_text(what))
        }),
        Some(_) => serde::Deserializer::deserialize_any(&mut de, Kind).map(|kind| {
            if kind != "null" {
                f(0, not_text(format!("flowTuples is {kind}, not an array")))
            }
        }),
    };
    debug_assert!(
        r.is_ok(),
        "a checked JSON value failed to parse again: {r:?}"
    );
}

fn not_text<'a>(what: String) -> Text<'a> {
    Text(Cow::Owned(what), false)
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v), true))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string()), true))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(not_text(format!(
                    "the tuple is a number ({v}), not a string"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(not_text(format!(
                    "the tuple is a number ({v}), not a string"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(not_text(format!(
                    "the tuple is a number ({v}), not a string"
                )))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(not_text(format!(
                    "the tuple is a boolean ({v}), not a string"
                )))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(not_text("the tuple is null, not a string".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(not_text("the tuple is an array, not a string".into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(not_text("the tuple is an object, not a string".into()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A record's version as logged: a number (a numeric string too), or what stood there
/// instead, for the `unknown_version` message. Any value is accepted, so a bad version
/// rejects the record's tuples, never the blob.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Ver {
    Num(u64),
    Other(String),
}

impl Ver {
    fn num(v: &Option<Ver>) -> Option<u64> {
        match v {
            Some(Ver::Num(n)) => Some(*n),
            _ => None,
        }
    }

    fn describe(name: &str, v: &Option<Ver>) -> String {
        match v {
            None => format!("no {name}"),
            Some(Ver::Num(n)) => format!("{name} {n}"),
            Some(Ver::Other(t)) => format!("{name} {}", term_safe(t)),
        }
    }
}

fn version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ver>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Ver>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a version")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Ver::Num(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(match u64::try_from(v) {
                Ok(n) => Ver::Num(n),
                Err(_) => Ver::Other(v.to_string()),
            }))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(if v.fract() == 0.0 && (0.0..1e15).contains(&v) {
                Ver::Num(v as u64)
            } else {
                Ver::Other(v.to_string())
            }))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(match v.trim().parse() {
                Ok(n) => Ver::Num(n),
                Err(_) => Ver::Other(format!("{:?}", cut(v))),
            }))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Ver::Other(v.to_string())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Some(Ver::Other("null".to_string())))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(Some(Ver::Other("an array".to_string())))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
            Ok(Some(Ver::Other("an object".to_string())))
        }
    }
    d.deserialize_any(V)
}

// ------------------------------------------------------------------ record handling ----

/// The outcome of one blob: its own ledger (merge it into the run's).
pub struct BlobOutcome {
    pub ledger: Ledger,
}

struct Handler<'de, 'x, S: TableSink> {
    path: &'x str,
    defaults: &'x PathDefaults<'x>,
    opts: &'x ParseOptions,
    sink: &'x mut S,
    scratch: &'x mut Scratch,
    ledger: Ledger,
    record_index: usize,
    /// Outlines of records seen (duplicate-record detection).
    record_hashes: HSet<u64>,
    /// Whether every accepted tuple of the current record repeated an earlier one.
    all_repeated: bool,
    /// Duplicate-tuple detection, exact.
    dups: dedup::DupTracker<'de>,
    /// The first tuple more than an hour outside the blob's hour: record, rule, tuple, time.
    skew_first: Option<(usize, String, usize, i64)>,
    /// How the current record's unknown version reads (`Version 7`, `Version true`).
    version_seen: String,
    /// The parsed bytes' address range, and where their first byte sits in the blob: a
    /// borrowed tuple's byte offset for `--rejects`.
    body: std::ops::Range<usize>,
    base: isize,
    /// The first record with parts of the wrong shape: its index and what was wrong.
    malformed_first: Option<(usize, String)>,
    /// The blob's seeded hasher for scope and record-outline ids ([`crate::hash`]).
    hasher: crate::hash::Build,
}

fn scope_hash(b: &crate::hash::Build, parts: &[&str]) -> u64 {
    use std::hash::BuildHasher;
    let mut h = b.build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

impl<'de, S: TableSink> Handler<'de, '_, S> {
    /// Where a tuple's text starts in the blob, when it is borrowed from the blob's bytes.
    fn offset_of(&self, t: &str) -> Option<u64> {
        offset_in(&self.body, self.base, t)
    }

    /// A record with parts of the wrong shape (see [`note_shape`]).
    fn malformed(&mut self, index: usize, notes: Vec<String>) {
        self.ledger.records_malformed += 1;
        if self.malformed_first.is_none() {
            self.malformed_first = Some((index, notes.join("; ")));
        }
    }

    /// One item of `records`: a record, or (no object) a malformed one.
    fn noted(&mut self, r: NotedRecord<'de>) {
        match r.rec {
            Some(rec) => self.record(rec, r.notes),
            None => {
                let index = self.record_index;
                self.record_index += 1;
                self.ledger.records += 1;
                self.malformed(index, r.notes);
            }
        }
    }

    /// One record, with the wrong-shape notes made while reading it.
    fn record(&mut self, rec: RawRecord<'de>, notes: Vec<String>) {
        let index = self.record_index;
        self.record_index += 1;
        self.ledger.records += 1;
        let shape_ok = notes.is_empty();
        if !shape_ok {
            self.malformed(index, notes);
        }

        // Another diagnostic category saved in the same tree (NSG event or rule-counter
        // logs, Activity log records), or a record of no flow-log shape: counted by
        // category, never read as a flow log.
        let category = rec.category.as_deref();
        let flow_category = category.is_none_or(|c| {
            c.eq_ignore_ascii_case("NetworkSecurityGroupFlowEvent")
                || c.eq_ignore_ascii_case("FlowLogFlowEvent")
        });
        let nsg_flows = rec.properties.as_ref().and_then(|p| p.flows.as_ref());
        if !flow_category || (nsg_flows.is_none() && rec.flow_records.is_none()) {
            if !shape_ok && flow_category {
                // A flow record whose flows were of the wrong shape: malformed, not another
                // category.
                return;
            }
            self.ledger.records_unrecognized += 1;
            let what = match category {
                Some(c) => c.to_string(),
                None => "no category".to_string(),
            };
            self.ledger.count_unrecognized(what, 1);
            return;
        }

        // A record whose header and group outline match an earlier one, and all of whose
        // tuples turn out to repeat earlier tuples (checked exactly), is a duplicate record.
        let outline_seen = !self
            .record_hashes
            .insert(record_outline(&self.hasher, &rec));
        self.all_repeated = true;

        // A record with both shapes (NSG `properties.flows` and VNet `flowRecords`) gives
        // the tuples of both.
        if let (Some(props), Some(flows)) = (&rec.properties, nsg_flows) {
            let family = match Ver::num(&props.version) {
                Some(1) => Some(Family::NsgV1),
                Some(2) => Some(Family::NsgV2),
                _ => None,
            };
            if family.is_none() {
                self.version_seen = Ver::describe("Version", &props.version);
            }
            let resource_id = rec.resource_id.as_deref().unwrap_or("");
            let nsg = if resource_id.is_empty() {
                self.defaults.nsg
            } else {
                last_segment(resource_id)
            };
            let mut subscription = subscription_of(resource_id);
            if subscription.is_empty() {
                subscription = self.defaults.subscription;
            }
            let record_mac = rec.mac_address.as_deref();
            for rf in flows {
                if rf.flows.is_empty() {
                    let ctx = GroupContext {
                        family: family.unwrap_or(Family::NsgV2),
                        nsg,
                        rule: &rf.rule,
                        mac: record_mac.unwrap_or(self.defaults.mac),
                        subscription,
                        resource_id,
                        target_resource_id: "",
                        flow_log_resource_id: "",
                        record_index: index,
                    };
                    if family.is_some() && !(outline_seen && self.opts.dedup) {
                        self.sink.table(&RuleTable {
                            ctx,
                            tuples: &[],
                            indices: &[],
                        });
                    }
                    continue;
                }
                for mf in &rf.flows {
                    let mac = mf
                        .mac
                        .as_deref()
                        .or(record_mac)
                        .unwrap_or(self.defaults.mac);
                    let ctx = GroupContext {
                        family: family.unwrap_or(Family::NsgV2),
                        nsg,
                        rule: &rf.rule,
                        mac,
                        subscription,
                        resource_id,
                        target_resource_id: "",
                        flow_log_resource_id: "",
                        record_index: index,
                    };
                    let scope = scope_hash(&self.hasher, &[resource_id, &rf.rule, mac]);
                    self.group(ctx, family, scope, mf.flow_tuples);
                }
            }
        }
        if let Some(fr) = &rec.flow_records {
            let family = (Ver::num(&rec.flow_log_version) == Some(4)).then_some(Family::Vnet);
            if family.is_none() {
                self.version_seen = Ver::describe("flowLogVersion", &rec.flow_log_version);
            }
            let flow_log = rec.flow_log_resource_id.as_deref().unwrap_or("");
            let mut subscription = subscription_of(flow_log);
            if subscription.is_empty() {
                subscription = subscription_of(rec.target_resource_id.as_deref().unwrap_or(""));
            }
            if subscription.is_empty() {
                subscription = self.defaults.subscription;
            }
            let mac = rec.mac_address.as_deref().unwrap_or(self.defaults.mac);
            let target = rec.target_resource_id.as_deref().unwrap_or("");
            for acl in &fr.flows {
                let nsg = vnet_acl_name(&acl.acl_id);
                for g in &acl.flow_groups {
                    let ctx = GroupContext {
                        family: Family::Vnet,
                        nsg,
                        rule: &g.rule,
                        mac,
                        subscription,
                        resource_id: &acl.acl_id,
                        target_resource_id: target,
                        flow_log_resource_id: flow_log,
                        record_index: index,
                    };
                    let scope = scope_hash(&self.hasher, &[&acl.acl_id, &g.rule, mac]);
                    self.group(ctx, family, scope, g.flow_tuples);
                }
            }
        }
        if outline_seen && self.all_repeated {
            self.ledger.duplicate_records += 1;
        }
    }

    /// Parse one `flowTuples` array and hand it to the sink as a rule table.
    fn group(
        &mut self,
        ctx: GroupContext<'_>,
        family: Option<Family>,
        scope: u64,
        tuples: Tuples<'de>,
    ) {
        let Some(family) = family else {
            each_tuple(tuples.0, &mut |i, t| {
                let byte_offset = self.offset_of(&t.0);
                self.ledger
                    .reject(RejectReason::UnknownVersion, || RejectExample {
                        byte_offset,
                        reason: RejectReason::UnknownVersion,
                        path: self.path.to_string(),
                        record: ctx.record_index,
                        rule: ctx.rule.to_string(),
                        tuple: i,
                        text: cut(&t.0),
                        message: format!(
                            "record {}: not NSG Version 1 or 2, nor VNet flowLogVersion 4",
                            self.version_seen
                        ),
                    });
            });
            return;
        };
        let mut buf = std::mem::take(&mut self.scratch.tuples);
        let mut idx = std::mem::take(&mut self.scratch.indices);
        idx.clear();
        buf.clear();
        let (body, base) = (self.body.clone(), self.base);
        let table_ctx = GroupContext { family, ..ctx };
        let mut handed = false;
        let mut items = 0usize;
        // The family is part of the scope: a text is a duplicate only of one read alike.
        let seen = self.dups.scope(scope ^ family as u64);
        seen.begin_array(tuples.0);
        let path = self.path;
        let (ledger, sink, opts) = (&mut self.ledger, &mut *self.sink, self.opts);
        let (skew_first, all_repeated) = (&mut self.skew_first, &mut self.all_repeated);
        let hour_ms = self.defaults.hour_ms;
        each_tuple(tuples.0, &mut |i, t| {
            items += 1;
            if !t.1 {
                ledger.reject(RejectReason::NotAString, || RejectExample {
                    byte_offset: None,
                    reason: RejectReason::NotAString,
                    path: path.to_string(),
                    record: ctx.record_index,
                    rule: ctx.rule.to_string(),
                    tuple: i,
                    text: String::new(),
                    message: t.0.to_string(),
                });
                return;
            }
            let t = &t.0;
            // The fast pass's tuple is used as it is (no copy into a `Result`); the
            // reference grammar names the reason when it declines.
            let ft = match tuple::fast(t, family) {
                Some(ft) => ft,
                None => match tuple::parse_tuple_slow(t, family) {
                    Ok(ft) => ft,
                    Err(e) => {
                        let byte_offset = offset_in(&body, base, t);
                        ledger.reject(e.reason, || RejectExample {
                            byte_offset,
                            reason: e.reason,
                            path: path.to_string(),
                            record: ctx.record_index,
                            rule: ctx.rule.to_string(),
                            tuple: i,
                            text: cut(t),
                            message: e.describe(t, family),
                        });
                        return;
                    }
                },
            };
            if !(MIN_TIME_MS..MAX_TIME_MS).contains(&ft.time_ms) {
                let byte_offset = offset_in(&body, base, t);
                ledger.reject(RejectReason::Timestamp, || RejectExample {
                    byte_offset,
                    reason: RejectReason::Timestamp,
                    path: path.to_string(),
                    record: ctx.record_index,
                    rule: ctx.rule.to_string(),
                    tuple: i,
                    text: cut(t),
                    message: format!(
                        "timestamp {:?} is outside 2015..2100",
                        term_safe(t.split(',').next().unwrap_or(""))
                    ),
                });
                return;
            }
            if let Some(h) = hour_ms {
                if ft.time_ms < h - HOUR_MS || ft.time_ms >= h + 2 * HOUR_MS {
                    ledger.clock_skew += 1;
                    if skew_first.is_none() {
                        *skew_first = Some((ctx.record_index, ctx.rule.to_string(), i, ft.time_ms));
                    }
                }
            }
            ledger.tuples += 1;
            ledger.tuples_accepted += 1;
            let fresh = match t {
                Cow::Borrowed(s) => seen.first_sighting(s, dedup::fingerprint(&ft), ft.time_ms, i),
                // Escaped tuples never occur in real logs; they are not deduplicated.
                Cow::Owned(_) => true,
            };
            if fresh {
                *all_repeated = false;
            } else {
                ledger.duplicate_tuples += 1;
            }
            if !fresh && opts.dedup {
                ledger.tuples_deduplicated += 1;
                return;
            }
            // A huge rule table (one record holding a whole blob) goes to the sink in pieces,
            // cut where the time changes, so the parsed tuples in memory stay bounded
            // whatever the blob's shape.
            if buf.len() >= TABLE_CHUNK
                && buf
                    .last()
                    .is_some_and(|l: &FlowTuple| l.time_ms != ft.time_ms)
            {
                sink.table(&RuleTable {
                    ctx: table_ctx,
                    tuples: &buf,
                    indices: &idx,
                });
                handed = true;
                buf.clear();
                idx.clear();
            }
            buf.push(ft);
            idx.push(i as u32);
        });
        // Every table is handed on, an empty one too (a rule with no hits), but for the
        // empty rest after pieces, or a table --dedup emptied.
        let emptied = buf.is_empty() && (handed || (opts.dedup && items > 0));
        if !emptied {
            sink.table(&RuleTable {
                ctx: table_ctx,
                tuples: &buf,
                indices: &idx,
            });
        }
        self.scratch.tuples = buf;
        self.scratch.indices = idx;
    }
}

/// The fuzzing property of the blob parser (`fuzz/`, replayed by a test): any bytes, read
/// as nsgflow reads a blob (plain, gzip or zip, under the default caps), parse without a
/// panic; the ledger balances and the folds saw exactly the accepted tuples. Panics when
/// that does not hold.
pub fn check_blob(data: &[u8]) {
    #[derive(Default)]
    struct Count(u64);
    impl TableSink for Count {
        fn table(&mut self, t: &RuleTable<'_>) {
            assert_eq!(t.tuples.len(), t.indices.len());
            self.0 += t.tuples.len() as u64;
        }
    }
    let opts = ParseOptions::default();
    let mut scratch = Scratch::default();
    let mut one = |bytes: &[u8]| {
        let mut c = Count::default();
        let l = parse_blob(
            "fuzz.json",
            bytes,
            &PathDefaults::default(),
            &opts,
            &mut scratch,
            &mut c,
        )
        .ledger;
        assert!(l.balances(), "ledger does not balance: {l:?}");
        assert_eq!(
            c.0, l.tuples_accepted,
            "folds saw other tuples than accepted"
        );
        assert_eq!(l.blobs, 1);
    };
    // Small caps keep a fuzzed bomb quick; the caps' own behaviour is tested elsewhere.
    let limits = compressed::Limits {
        max_bytes: 1 << 24,
        ..Default::default()
    };
    match compressed::sniff(data) {
        compressed::Container::Plain => one(data),
        compressed::Container::Gzip => {
            let mut out = Vec::new();
            if compressed::gunzip(data, &limits, &mut out).is_ok() {
                one(&out);
            }
        }
        compressed::Container::Zip => {
            for (_, e) in compressed::unzip(data, &limits).unwrap_or_default() {
                if let Ok(b) = e {
                    one(&b);
                }
            }
        }
    }
}

/// Tuples a rule table holds at most before it is handed on in pieces (cut at a change of
/// time; real records hold a minute, far fewer): 64k parsed tuples are about 7 MB.
pub const TABLE_CHUNK: usize = 65_536;

/// Where `t` starts in the blob whose parsed bytes span `body` (addresses), the first of
/// them at file offset `base`; `None` when `t` is not borrowed from them (unescaped).
fn offset_in(body: &std::ops::Range<usize>, base: isize, t: &str) -> Option<u64> {
    // An unescaped (owned) text lies outside the blob's bytes.
    let at = t.as_ptr() as usize;
    body.contains(&at)
        .then(|| ((at - body.start) as i64 + base as i64).max(0) as u64)
}

fn cut(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A cheap outline of a record: its header fields and, per group, the rule, MAC, tuple
/// count and first and last tuple. Equal outlines only nominate a duplicate; the tuples are
/// compared exactly by the duplicate tracker.
fn record_outline(b: &crate::hash::Build, rec: &RawRecord<'_>) -> u64 {
    use std::hash::BuildHasher;
    /// A `flowTuples` text by its length and ends.
    fn ends(h: &mut impl Hasher, t: Tuples<'_>) {
        let b = t.0.as_bytes();
        const END: usize = 128;
        b.len().hash(h);
        b[..b.len().min(END)].hash(h);
        b[b.len().saturating_sub(END)..].hash(h);
    }
    let mut h = b.build_hasher();
    rec.time.hash(&mut h);
    rec.resource_id.hash(&mut h);
    rec.mac_address.hash(&mut h);
    rec.flow_log_resource_id.hash(&mut h);
    rec.target_resource_id.hash(&mut h);
    if let Some(p) = &rec.properties {
        p.version.hash(&mut h);
        for rf in p.flows.iter().flatten() {
            rf.rule.hash(&mut h);
            for mf in &rf.flows {
                mf.mac.hash(&mut h);
                ends(&mut h, mf.flow_tuples);
            }
        }
    }
    if let Some(fr) = &rec.flow_records {
        rec.flow_log_version.hash(&mut h);
        for a in &fr.flows {
            a.acl_id.hash(&mut h);
            for g in &a.flow_groups {
                g.rule.hash(&mut h);
                ends(&mut h, g.flow_tuples);
            }
        }
    }
    h.finish()
}

// ------------------------------------------------------------------ top-level shapes ----

/// Top-level value: a `{"records":[…]}` wrapper, a bare record, or an array of records.
struct TopSeed<'a, 'de, 'x, S: TableSink> {
    h: &'a mut Handler<'de, 'x, S>,
}

struct RecordsSeed<'a, 'de, 'x, S: TableSink> {
    h: &'a mut Handler<'de, 'x, S>,
}

impl<'de, S: TableSink> DeserializeSeed<'de> for RecordsSeed<'_, 'de, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: TableSink> Visitor<'de> for RecordsSeed<'_, 'de, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of flow-log records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(rec) = seq.next_element::<NotedRecord<'de>>()? {
            self.h.noted(rec);
        }
        Ok(())
    }
}

impl<'de, S: TableSink> DeserializeSeed<'de> for TopSeed<'_, 'de, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: TableSink> Visitor<'de> for TopSeed<'_, 'de, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a flow-log blob: {\"records\":[…]}, a record, or an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.h.ledger.tolerated.array += 1;
        RecordsSeed { h: self.h }.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::custom("empty JSON object, not a flow-log blob"));
        };
        if first == "records" {
            map.next_value_seed(RecordsSeed { h: self.h })?;
            // A second `records` would be read over the first by a JSON library that keeps
            // the last key, and ignored by one that keeps the first: neither is right, so
            // the blob breaks here (partial: the first array's records are kept and said).
            while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                if k == "records" {
                    return Err(de::Error::custom(
                        "duplicate key \"records\": a blob has one records array; the second was not read",
                    ));
                }
                map.next_value::<de::IgnoredAny>()?;
            }
            return Ok(());
        }
        // A bare record: replay the key we consumed, then read the rest as a record.
        let rec = RawRecord::deserialize(de::value::MapAccessDeserializer::new(Replay {
            first: Some(first),
            inner: map,
        }))?;
        if let Some(records) = rec.records {
            // `{"...": …, "records": [...]}`: a wrapper whose records are not first.
            for r in records {
                self.h.noted(r);
            }
            return Ok(());
        }
        if rec.properties.is_none() && rec.flow_records.is_none() && rec.category.is_none() {
            return Err(de::Error::custom(
                "JSON of another schema: no \"records\" array, and not a flow-log record",
            ));
        }
        self.h.ledger.tolerated.bare_record += 1;
        self.h.record(rec, take_shape_notes());
        Ok(())
    }
}

struct Replay<A> {
    first: Option<String>,
    inner: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        if let Some(k) = self.first.take() {
            return seed
                .deserialize(de::value::StringDeserializer::<A::Error>::new(k))
                .map(Some);
        }
        self.inner.next_key_seed(seed)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// Byte offset of a serde_json (line, column) position in `buf` (column is 1-based).
fn offset_of(buf: &[u8], line: usize, column: usize) -> usize {
    let mut off = 0;
    if line > 1 {
        let mut seen = 1;
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' {
                seen += 1;
                if seen == line {
                    off = i + 1;
                    break;
                }
            }
        }
    }
    (off + column.saturating_sub(1)).min(buf.len())
}

/// The first bytes of `b`, as text a terminal can show (escaped).
fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(48)]);
    s.chars()
        .map(|c| match c {
            c if c.is_control() || c == '"' || c == '\\' => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// What a blob that cannot be JSON looks like, said before parsing: UTF-16 or UTF-32 text,
/// an HTML or XML page (Azure's `<Error><Code>AuthenticationFailed…` saved as a blob),
/// binary data. `None` for anything that may be JSON.
fn not_json(body: &[u8]) -> Option<String> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let b = &body[first..];
    let enc = if b.starts_with(&[0xFF, 0xFE, 0, 0]) {
        Some("UTF-32LE")
    } else if b.starts_with(&[0, 0, 0xFE, 0xFF]) {
        Some("UTF-32BE")
    } else if b.starts_with(&[0xFF, 0xFE]) || (b.len() > 3 && b[1] == 0 && b[3] == 0 && b[0] != 0) {
        Some("UTF-16LE")
    } else if b.starts_with(&[0xFE, 0xFF]) || (b.len() > 3 && b[0] == 0 && b[2] == 0 && b[1] != 0) {
        Some("UTF-16BE")
    } else {
        None
    };
    if let Some(e) = enc {
        return Some(format!(
            "unsupported encoding {e}: flow logs are UTF-8 JSON (re-save it as UTF-8)"
        ));
    }
    if b[0] == b'<' {
        return Some(format!(
            "an HTML or XML page, not a flow log (a saved error page?): begins \"{}\"",
            excerpt(b)
        ));
    }
    if !matches!(b[0], b'{' | b'[' | b',') {
        let binary = b
            .iter()
            .take(64)
            .any(|c| *c < 0x09 || (*c > 0x0d && *c < 0x20));
        let what = if binary { "binary data" } else { "text" };
        return Some(format!("{what}, not JSON: begins \"{}\"", excerpt(b)));
    }
    None
}

/// Read the top-level values of `body` one after another (one, or several for NDJSON).
/// Returns the error that stopped reading, with its offset in `body`, how many values were
/// read whole, and whether the error is at the start of what follows a whole value
/// (trailing data, not a broken document).
fn parse_values<'de, R, S, F>(
    body: &'de [u8],
    make: F,
    h: &mut Handler<'de, '_, S>,
) -> (Option<(serde_json::Error, usize)>, usize, bool)
where
    R: serde_json::de::Read<'de>,
    S: TableSink,
    F: Fn(usize) -> serde_json::Deserializer<R>,
{
    let mut pos = 0usize;
    let mut values = 0usize;
    loop {
        let sub = &body[pos..];
        let records_before = h.record_index;
        let mut de = make(pos);
        if let Err(e) = (TopSeed { h: &mut *h }).deserialize(&mut de) {
            let at = if e.is_eof() {
                body.len()
            } else {
                pos + offset_of(sub, e.line(), e.column())
            };
            // Not even the first byte of a value after a whole one: trailing data.
            let trailing = values > 0 && h.record_index == records_before && !e.is_eof() && {
                let lead = sub.iter().take_while(|b| b.is_ascii_whitespace()).count();
                at <= pos + lead + 1
            };
            let at = if trailing {
                pos + sub.iter().take_while(|b| b.is_ascii_whitespace()).count()
            } else {
                at
            };
            return (Some((e, at)), values, trailing);
        }
        values += 1;
        match de.end() {
            Ok(()) => return (None, values, false),
            Err(e) => {
                // Trailing characters: another top-level value follows (NDJSON).
                let next = pos + offset_of(sub, e.line(), e.column());
                if next <= pos || next >= body.len() {
                    return (Some((e, next)), values, true);
                }
                pos = next;
            }
        }
    }
}

/// Parse one blob's bytes. Tables go to `sink`; the blob's ledger is returned.
pub fn parse_blob<S: TableSink>(
    path: &str,
    data: &[u8],
    defaults: &PathDefaults<'_>,
    opts: &ParseOptions,
    scratch: &mut Scratch,
    sink: &mut S,
) -> BlobOutcome {
    let mut ledger = Ledger {
        blobs: 1,
        bytes: data.len() as u64,
        ..Ledger::default()
    };
    let mut body = data;
    // Where `body[0]` sits in the file, and a correction for the fragment wrapper.
    let mut base: isize = 0;
    if let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
        ledger.tolerated.bom += 1;
        body = rest;
        base = 3;
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let wrapped: Vec<u8>;
    if body.get(start) == Some(&b',') {
        ledger.tolerated.fragment += 1;
        let mut inner = &body[start + 1..];
        let trimmed_end = inner.trim_ascii_end();
        if let Some(t) = trimmed_end.strip_suffix(b"]}") {
            inner = t;
        }
        let mut w = Vec::with_capacity(inner.len() + 14);
        w.extend_from_slice(b"{\"records\":[");
        w.extend_from_slice(inner);
        w.extend_from_slice(b"]}");
        wrapped = w;
        // wrapped[12] is the byte after the comma, at file offset base + start + 1.
        base += start as isize + 1 - 12;
        body = &wrapped;
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        // Azure creates a blob before its first block: an empty one is nothing to read.
        ledger.blobs_empty += 1;
        ledger.problems.push(BlobProblem {
            path: path.to_string(),
            kind: BlobProblemKind::Warning,
            message: format!("empty_blob: {} bytes, no records", data.len()),
            byte_offset: None,
        });
        return BlobOutcome { ledger };
    }
    if let Some(what) = not_json(body) {
        ledger.blobs_failed += 1;
        ledger.problems.push(BlobProblem {
            path: path.to_string(),
            kind: BlobProblemKind::Failed,
            message: what,
            byte_offset: Some(0),
        });
        return BlobOutcome { ledger };
    }

    let mut h = Handler {
        path,
        defaults,
        opts,
        sink,
        scratch,
        ledger: Ledger {
            keep_all: opts.keep_rejects,
            ..ledger
        },
        record_index: 0,
        record_hashes: HSet::default(),
        all_repeated: true,
        dups: dedup::DupTracker::default(),
        skew_first: None,
        version_seen: String::new(),
        body: body.as_ptr_range().start as usize..body.as_ptr_range().end as usize,
        base,
        malformed_first: None,
        hasher: crate::hash::Build::default(),
    };
    // Notes left by a blob that panicked on this thread belong to no record here.
    take_shape_notes();
    // Valid UTF-8 (the norm) lets serde_json skip per-string validation.
    let (error, values, trailing) = match simdutf8::basic::from_utf8(body) {
        Ok(text) => parse_values(
            body,
            |sub| serde_json::Deserializer::from_str(&text[sub..]),
            &mut h,
        ),
        Err(_) => parse_values(
            body,
            |sub| serde_json::Deserializer::from_slice(&body[sub..]),
            &mut h,
        ),
    };
    let mut ledger = std::mem::take(&mut h.ledger);
    if let Some((record, rule, tuple, time)) = h.skew_first.take() {
        ledger.problems.push(BlobProblem {
            path: path.to_string(),
            kind: BlobProblemKind::Warning,
            message: format!(
                "{} tuples are more than an hour outside the blob's hour (its path): kept, counted as clock_skew; the first at record {record}, rule {}, tuple {tuple}, time {}",
                ledger.clock_skew,
                term_safe(&rule),
                crate::text::fmt_ms(time)
            ),
            byte_offset: None,
        });
    }
    if let Some((record, what)) = h.malformed_first.take() {
        ledger.problems.push(BlobProblem {
            path: path.to_string(),
            kind: BlobProblemKind::Warning,
            message: format!(
                "{} records had parts of the wrong JSON type, skipped (the rest of each record was read); the first: record {record}: {}",
                ledger.records_malformed,
                term_safe(&what)
            ),
            byte_offset: None,
        });
    }
    if values > 1 {
        ledger.tolerated.ndjson += 1;
    }
    if let Some((e, at)) = error {
        let file_off = (at as isize + base).max(0) as u64;
        let what = match e.classify() {
            _ if trailing => format!(
                "trailing_data at byte {file_off}: bytes after the JSON document that are not JSON (\"{}\")",
                excerpt(&body[at.min(body.len())..])
            ),
            serde_json::error::Category::Eof => "blob ends early (truncated?)".to_string(),
            serde_json::error::Category::Syntax => format!("not valid JSON: {e}"),
            serde_json::error::Category::Data => format!("unexpected JSON structure: {e}"),
            serde_json::error::Category::Io => format!("read error: {e}"),
        };
        let kept = ledger.records;
        let (kind, message) = if trailing && kept > 0 {
            // The document was whole: every record in it was read.
            ledger.blobs_partial += 1;
            (
                BlobProblemKind::Partial,
                format!("{what}; the {kept} records of the document before it were kept"),
            )
        } else if trailing {
            ledger.blobs_failed += 1;
            (BlobProblemKind::Failed, what)
        } else if kept > 0 {
            ledger.blobs_partial += 1;
            (
                BlobProblemKind::Partial,
                format!("{what}; breaks at byte {file_off}, the {kept} complete records before it were kept"),
            )
        } else {
            ledger.blobs_failed += 1;
            (
                BlobProblemKind::Failed,
                format!("{what}; at byte {file_off}"),
            )
        };
        ledger.problems.push(BlobProblem {
            path: path.to_string(),
            kind,
            message,
            byte_offset: Some(file_off),
        });
    }
    BlobOutcome { ledger }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        tables: Vec<(Family, String, String, String, usize)>,
        tuples: usize,
    }
    impl TableSink for Collect {
        fn table(&mut self, t: &RuleTable<'_>) {
            self.tuples += t.tuples.len();
            self.tables.push((
                t.ctx.family,
                t.ctx.nsg.to_string(),
                t.ctx.rule.to_string(),
                t.ctx.mac.to_string(),
                t.tuples.len(),
            ));
        }
    }

    fn run(data: &[u8]) -> (Ledger, Collect) {
        run_opts(data, &ParseOptions::default())
    }
    fn run_opts(data: &[u8], opts: &ParseOptions) -> (Ledger, Collect) {
        let mut c = Collect::default();
        let out = parse_blob(
            "t.json",
            data,
            &PathDefaults::default(),
            opts,
            &mut Scratch::default(),
            &mut c,
        );
        assert!(out.ledger.balances());
        (out.ledger, c)
    }

    /// The items of a raw `flowTuples`, by the scan or (`scan` false) by serde_json.
    fn items(raw: &str, scan: bool) -> Vec<(usize, String, bool)> {
        let mut out = Vec::new();
        let mut push = |i, t: Text| out.push((i, t.0.into_owned(), t.1));
        if scan {
            each_tuple(raw, &mut push)
        } else {
            each_tuple_json(raw, &mut push)
        }
        out
    }

    /// The tuple scan gives what serde_json gives, item for item, on the usual array and
    /// on every case it hands over: an escape, an item that is no string, odd spacing,
    /// and `flowTuples` that is no array.
    #[test]
    fn the_tuple_scan_agrees_with_serde_json_on_every_shape() {
        let cases = [
            r#"["a,1","b,2","c,3"]"#,
            " [ \"a,1\" ,\n\t\"b,2\"\r\n] ",
            r#"[]"#,
            r#"[ ]"#,
            r#"["a,1","b\u0041,2","c,3"]"#,
            r#"["a\"x","b"]"#,
            r#"["a,1",7,"c,3",null,{"k":1},["d"],"e"]"#,
            r#"[5,"b"]"#,
            r#""1,2,3""#,
            r#"12"#,
            r#"true"#,
            r#"null"#,
            r#"{"a":"b"}"#,
            r#""#,
        ];
        for raw in cases {
            let fast = items(raw, true);
            let slow = items(raw, false);
            assert_eq!(fast, slow, "{raw}");
        }
        assert_eq!(
            items(r#"["a,1",7,"c\u0041"]"#, true),
            vec![
                (0, "a,1".to_string(), true),
                (
                    1,
                    "the tuple is a number (7), not a string".to_string(),
                    false
                ),
                (2, "cA".to_string(), true),
            ]
        );
        assert_eq!(
            items(r#"{"a":1}"#, true),
            vec![(
                0,
                "flowTuples is an object, not an array".to_string(),
                false
            )]
        );
    }

    /// One record holding a whole blob of tuples is read in memory near nothing beyond
    /// the blob itself: the tuples are parsed one at a time from the raw array, and rule
    /// tables reach the sink in pieces of [`TABLE_CHUNK`]. (Before, every tuple's text was
    /// held at once, 32 bytes each plus the vector's doubling: a 320 MB blob took 1 GB.)
    #[test]
    fn one_huge_record_is_read_in_memory_bounded_by_a_chunk_not_the_blob() {
        let blob_of = |n: usize| {
            let mut blob = String::from(
                r#"{"records":[{"time":"2026-01-05T10:00:00Z","category":"NetworkSecurityGroupFlowEvent","resourceId":"/S/NSG1","properties":{"Version":2,"flows":[{"rule":"R","flows":[{"mac":"M","flowTuples":["#,
            );
            for i in 0..n {
                if i > 0 {
                    blob.push(',');
                }
                blob.push_str(&format!(
                    "\"{},10.0.{}.{},10.0.0.2,{},443,T,O,A,B,1,{},2,{}\"",
                    1_767_607_200 + i / 200,
                    i / 250 % 250,
                    i % 250,
                    1024 + i % 60_000,
                    i % 1000,
                    i % 777
                ));
            }
            blob.push_str("]}]}]}}]}");
            blob
        };
        let mut peaks = Vec::new();
        for n in [2 * TABLE_CHUNK, 8 * TABLE_CHUNK] {
            let blob = blob_of(n);
            let ((ledger, c), peak) = crate::test_alloc::peak_of(|| run(blob.as_bytes()));
            assert_eq!(ledger.tuples_accepted, n as u64);
            assert_eq!(c.tuples, n);
            peaks.push((blob.len(), peak));
        }
        // Four times the tuples (8.4 MB, then 33.5 MB of blob) cost no more memory: the
        // peak is one chunk of parsed tuples. Holding every tuple's text, as before,
        // would have added 32 bytes a tuple, doubled while the vector grew.
        let [(small, p_small), (big, p_big)] = peaks[..] else {
            unreachable!()
        };
        assert!(
            p_big < p_small + (1 << 20) && p_big < big / 2,
            "peak {p_small} B on a {small} B blob, {p_big} B on a {big} B blob"
        );
    }

    /// A rule table over [`TABLE_CHUNK`] tuples reaches the sink in pieces cut where the
    /// time changes, every tuple once, in order.
    #[test]
    fn a_huge_rule_table_goes_to_the_sink_in_pieces_cut_at_a_time_change() {
        // Two tuples per second, so a cut never splits one second's tuples.
        let n = TABLE_CHUNK * 2 + 11;
        let tuples: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "\"{},10.0.0.1,10.0.0.2,{},443,T,O,A,B,,,,\"",
                    1_767_607_200 + i / 2,
                    1000 + i % 50_000
                )
            })
            .collect();
        let blob = format!(
            r#"{{"records":[{{"time":"2026-01-05T10:00:00Z","category":"NetworkSecurityGroupFlowEvent","resourceId":"/S/NSG1","properties":{{"Version":2,"flows":[{{"rule":"R","flows":[{{"mac":"M","flowTuples":[{}]}}]}}]}}}}]}}"#,
            tuples.join(",")
        );
        #[derive(Default)]
        struct Pieces(Vec<(usize, i64, i64, u32)>);
        impl TableSink for Pieces {
            fn table(&mut self, t: &RuleTable<'_>) {
                self.0.push((
                    t.tuples.len(),
                    t.tuples[0].time_ms,
                    t.tuples[t.tuples.len() - 1].time_ms,
                    t.indices[0],
                ));
            }
        }
        let mut p = Pieces::default();
        let out = parse_blob(
            "t.json",
            blob.as_bytes(),
            &PathDefaults::default(),
            &ParseOptions::default(),
            &mut Scratch::default(),
            &mut p,
        );
        assert_eq!(out.ledger.tuples_accepted, n as u64);
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.0.iter().map(|x| x.0).sum::<usize>(), n);
        assert_eq!(p.0[0].0, TABLE_CHUNK);
        assert_eq!(p.0[1].3, TABLE_CHUNK as u32, "indices go on across pieces");
        for w in p.0.windows(2) {
            assert!(w[0].2 < w[1].1, "a cut falls between two seconds");
        }
    }

    const REC_V2: &str = r#"{"time":"2018-11-13T12:00:35.3899262Z","category":"NetworkSecurityGroupFlowEvent","resourceId":"/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG1","properties":{"Version":2,"flows":[{"rule":"DefaultRule_DenyAllInBound","flows":[{"mac":"000D3AF87856","flowTuples":["1542110402,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,","1542110424,176.119.4.10,10.5.16.4,56509,59336,T,I,D,B,,,,"]}]}]}}"#;

    #[test]
    fn standard_wrapper() {
        let blob = format!(r#"{{"records":[{REC_V2}]}}"#);
        let (l, c) = run(blob.as_bytes());
        assert_eq!((l.records, l.tuples, l.tuples_accepted), (1, 2, 2));
        assert_eq!(c.tables[0].1, "NSG1");
        assert_eq!(c.tables[0].2, "DefaultRule_DenyAllInBound");
        assert!(l.problems.is_empty());
    }

    #[test]
    fn bom_bare_ndjson_fragment_array() {
        let bom = format!("\u{FEFF}{{\"records\":[{REC_V2}]}}");
        let (l, c) = run(bom.as_bytes());
        assert_eq!((l.tolerated.bom, c.tuples), (1, 2));

        let (l, c) = run(REC_V2.as_bytes());
        assert_eq!((l.tolerated.bare_record, c.tuples), (1, 2));

        let nd = format!("{REC_V2}\n{REC_V2}\n{REC_V2}\n");
        let (l, c) = run(nd.as_bytes());
        assert_eq!((l.tolerated.ndjson, l.records, c.tuples), (1, 3, 6));
        assert_eq!(l.duplicate_records, 2);
        assert_eq!(l.duplicate_tuples, 4);

        let frag = format!(",{REC_V2},{REC_V2}");
        let (l, c) = run(frag.as_bytes());
        assert_eq!((l.tolerated.fragment, l.records, c.tuples), (1, 2, 4));
        assert!(l.problems.is_empty(), "{:?}", l.problems);

        let arr = format!("[{REC_V2}]");
        let (l, c) = run(arr.as_bytes());
        assert_eq!((l.tolerated.array, c.tuples), (1, 2));
    }

    #[test]
    fn truncated_blob_keeps_complete_records_and_reports_offset() {
        let blob = format!(r#"{{"records":[{REC_V2},{REC_V2}]}}"#);
        let cut_at = 12 + REC_V2.len() + 1 + 40;
        let (l, c) = run(&blob.as_bytes()[..cut_at]);
        assert_eq!(
            (l.records, c.tuples, l.blobs_partial, l.blobs_failed),
            (1, 2, 1, 0)
        );
        assert_eq!(l.problems[0].byte_offset, Some(cut_at as u64));
        assert!(
            l.problems[0].message.contains("truncated"),
            "{}",
            l.problems[0].message
        );
    }

    #[test]
    fn not_json_and_other_schema_fail() {
        let (l, _) = run(b"hello world");
        assert_eq!((l.blobs_failed, l.records), (1, 0));
        assert_eq!(
            l.problems[0].message,
            "text, not JSON: begins \"hello world\""
        );
        let (l, _) = run(b"\xff\xfe{\x00\"\x00");
        assert_eq!(
            l.problems[0].message,
            "unsupported encoding UTF-16LE: flow logs are UTF-8 JSON (re-save it as UTF-8)"
        );
        let (l, _) = run(b"<Error><Code>AuthenticationFailed</Code>\x1b[2J</Error>");
        assert_eq!(
            l.problems[0].message,
            "an HTML or XML page, not a flow log (a saved error page?): begins \"<Error><Code>AuthenticationFailed</Code>\\x1b[2J</Er\""
        );
        let (l, _) = run(b"\x7fELF\x02\x01");
        assert!(l.problems[0]
            .message
            .starts_with("binary data, not JSON: begins \"\\x7fELF\\x02"));
        let (l, _) = run(b"{\"records\":[]} xyz");
        assert_eq!(
            l.problems[0].message,
            "trailing_data at byte 15: bytes after the JSON document that are not JSON (\"xyz\")"
        );
        let (l, _) = run(br#"{"value": [1,2,3]}"#);
        assert_eq!(l.blobs_failed, 1);
        assert!(
            l.problems[0].message.contains("another schema"),
            "{}",
            l.problems[0].message
        );
        // Empty: a warning, not a failure.
        let (l, _) = run(b"  \n");
        assert_eq!((l.blobs_failed, l.blobs_empty), (0, 1));
        assert_eq!(l.problems[0].message, "empty_blob: 3 bytes, no records");
    }

    #[test]
    fn version_decided_per_record_and_unknown_versions_rejected() {
        let v1 = REC_V2
            .replace("\"Version\":2", "\"Version\":1")
            .replace(",B,,,,", "");
        let v3 = REC_V2.replace("\"Version\":2", "\"Version\":3");
        let blob = format!(r#"{{"records":[{REC_V2},{v1},{v3}]}}"#);
        let (l, c) = run(blob.as_bytes());
        assert_eq!(l.records, 3);
        assert_eq!((l.tuples, l.tuples_accepted), (6, 4));
        assert_eq!(
            l.rejected_by_reason[RejectReason::UnknownVersion.index()],
            2
        );
        assert_eq!(c.tables[1].0, Family::NsgV1);
    }

    #[test]
    fn dedup_drops_duplicates_but_counts_them_either_way() {
        let blob = format!(r#"{{"records":[{REC_V2},{REC_V2}]}}"#);
        let (l, c) = run(blob.as_bytes());
        assert_eq!(
            (l.duplicate_records, l.duplicate_tuples, c.tuples),
            (1, 2, 4)
        );
        let (l, c) = run_opts(
            blob.as_bytes(),
            &ParseOptions {
                dedup: true,
                ..Default::default()
            },
        );
        assert_eq!(
            (l.duplicate_records, l.duplicate_tuples, c.tuples),
            (1, 2, 2)
        );
        assert_eq!(l.tuples_deduplicated, 2);
        assert_eq!(l.tuples_accepted, 4, "dedup does not change what was read");
    }

    #[test]
    fn empty_rule_flows_yield_empty_tables() {
        let rec = REC_V2.replace(
            r#"{"rule":"DefaultRule_DenyAllInBound""#,
            r#"{"rule":"UserRule_Idle","flows":[]},{"rule":"DefaultRule_DenyAllInBound""#,
        );
        let (_, c) = run(rec.as_bytes());
        assert_eq!(c.tables[0].2, "UserRule_Idle");
        assert_eq!(c.tables[0].4, 0);
    }

    #[test]
    fn vnet_records_keep_acl_target_flow_log_and_mac() {
        struct Ctx(Vec<(String, String, String, String, String)>);
        impl TableSink for Ctx {
            fn table(&mut self, t: &RuleTable<'_>) {
                let c = &t.ctx;
                self.0.push((
                    c.nsg.to_string(),
                    c.resource_id.to_string(),
                    c.target_resource_id.to_string(),
                    c.flow_log_resource_id.to_string(),
                    c.mac_normalized().into_owned(),
                ));
            }
        }
        let rec = r#"{"time":"2024-12-31T09:13:37.7570617Z","macAddress":"00-0d-3a-35-95-73","category":"FlowLogFlowEvent","flowLogResourceID":"/SUBSCRIPTIONS/C0/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTUS/FLOWLOGS/FL1","targetResourceID":"/subscriptions/c0/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic1","flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"/subscriptions/c0/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/labsvm1-nsg","flowGroups":[{"rule":"DefaultRule_AllowInternetOutBound","flowTuples":["1735636357995,10.1.0.4,20.10.127.193,56354,443,6,O,E,NX,8,5183,9,6707"]}]},{"aclID":"00000000-0000-0000-0000-000000000000","flowGroups":[{"rule":"PlatformRule","flowTuples":["1735636357995,10.1.0.4,168.63.129.16,56355,53,17,O,B,NX,0,0,0,0"]}]}]}}"#;
        let mut c = Ctx(Vec::new());
        let out = parse_blob(
            "v.json",
            rec.as_bytes(),
            &PathDefaults::default(),
            &ParseOptions::default(),
            &mut Scratch::default(),
            &mut c,
        );
        assert_eq!(out.ledger.tuples_accepted, 2);
        assert_eq!(c.0[0].0, "labsvm1-nsg");
        assert!(c.0[0].1.ends_with("/networkSecurityGroups/labsvm1-nsg"));
        assert!(c.0[0].2.ends_with("/networkInterfaces/nic1"));
        assert!(c.0[0].3.ends_with("/FLOWLOGS/FL1"));
        assert_eq!(c.0[0].4, "000D3A359573");
        assert_eq!(c.0[1].0, "Azure platform");
    }

    #[test]
    fn offsets_from_line_and_column() {
        let buf = b"ab\ncd\nef";
        assert_eq!(offset_of(buf, 1, 1), 0);
        assert_eq!(offset_of(buf, 2, 2), 4);
        assert_eq!(offset_of(buf, 3, 1), 6);
    }
}

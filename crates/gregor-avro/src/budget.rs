//! The budget walk: before apache-avro decodes a body, walk the writer schema over its bytes,
//! reading only varints, lengths, block counts, union branches and enum indexes, and charge
//! every value and decoded byte against [`DecodeLimits`].
//!
//! apache-avro caps each array's allocation, not arrays nested in arrays, and decodes every
//! field of the writer — also those the reader schema then drops — so a few hundred bytes can
//! declare tens of gigabytes. The walk costs O(bytes + items), allocates nothing, charges each
//! block's count *before* walking its items (so no count makes it loop without bound), and
//! bounds its own recursion by the depth limit. It mirrors apache-avro's reading exactly:
//! whatever it accepts, apache-avro reads the same way, and never more.

use std::collections::HashMap;
use std::mem::size_of;

use apache_avro::Schema;
use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, Name, NamesRef, NamespaceRef, ResolvedSchema, UuidSchema,
};
use apache_avro::types::Value;

use crate::{AvroError, DecodeLimits, MAX_DECODED_BYTES_VAR, MAX_DEPTH_VAR, MAX_ITEMS_VAR};

/// What every decoded value costs besides its contents: its slot.
const SLOT: usize = size_of::<Value>();
/// A record field: its name's `String` and its value's slot (plus the name's bytes).
const FIELD: usize = size_of::<(String, Value)>();
/// A map entry: key and value, three times over for the hash table's spare capacity and its
/// growth (plus the key's bytes).
const ENTRY: usize = 3 * size_of::<(String, Value)>();

/// One writer type, as far as reading its bytes goes. Named types are compiled once;
/// references point at their index, so recursive schemas stay finite.
#[derive(Debug)]
enum Node {
    /// `null`: nothing to read.
    Null,
    /// `boolean`: one byte.
    Boolean,
    /// `int`, `date`, `time-millis`: a varint that must fit in 32 bits.
    Int,
    /// `long` and its logical types: a varint.
    Long,
    /// `float`, `double`, `fixed` (also decimal, uuid and duration on `fixed`): `len`
    /// bytes, kept on the heap when `heap`.
    Raw { len: usize, heap: bool },
    /// `string`, `bytes` (also decimal, big-decimal and uuid on them): a length, then that
    /// many bytes.
    Length,
    /// `enum`: an index; the decoded value copies the symbol (its length is kept).
    Enum(Vec<usize>),
    /// `array` of the node at this index.
    Array(usize),
    /// `map` with values of the node at this index.
    Map(usize),
    /// `union` of these nodes: a branch index, then that branch.
    Union(Vec<usize>),
    /// `record`: its fields in order, and what their names and slots cost — including the
    /// fields only the reader has, which resolution fills from their defaults (`extra` values
    /// more per record).
    Record {
        fields: Vec<usize>,
        cost: usize,
        extra: usize,
    },
}

/// A writer schema compiled for the walk: its nodes, the root first.
#[derive(Debug)]
pub(crate) struct Shape {
    nodes: Vec<Node>,
    /// The fewest bytes each node can take, a lower bound used to see that a block of
    /// `n` items cannot fit in what is left of the body.
    min_bytes: Vec<usize>,
}

impl Shape {
    /// Compiles `schema` (references resolved against itself). With `reader`, each writer
    /// record that the reader also has (same full name) is charged for the reader-only
    /// fields resolution fills from their defaults: a writer record of few fields must not
    /// buy, per byte of body, values the reader's defaults multiply.
    pub(crate) fn compile(schema: &Schema, reader: Option<&Schema>) -> Result<Self, String> {
        let resolved = ResolvedSchema::try_from(schema)
            .map_err(|e| format!("writer schema: {}", crate::error_chain(&e)))?;
        let mut reader_records = HashMap::new();
        if let Some(reader) = reader {
            collect_records(reader, None, &mut reader_records);
        }
        let mut compiler = Compiler {
            names: resolved.get_names(),
            named: HashMap::new(),
            nodes: Vec::new(),
            reader_records,
        };
        compiler.compile(schema, None)?;
        let nodes = compiler.nodes;
        let min_bytes = min_bytes(&nodes);
        Ok(Self { nodes, min_bytes })
    }

    /// Walks `body` and charges it against `limits`: `Ok` with the value's depth when
    /// apache-avro may decode it. Bytes left after the value are not this walk's concern (the
    /// decoder reports them).
    pub(crate) fn check(
        &self,
        id: u32,
        body: &[u8],
        limits: &DecodeLimits,
    ) -> Result<usize, AvroError> {
        let mut walk = Walk {
            shape: self,
            limits,
            body,
            pos: 0,
            items: 0,
            bytes: 0,
            deepest: 0,
        };
        let outcome = walk.charge(1, SLOT).and_then(|()| walk.value(0, 0));
        outcome
            .map(|()| walk.deepest)
            .map_err(|stop| stop.into_error(id, body.len(), limits))
    }
}

struct Compiler<'s, 'n> {
    names: &'n NamesRef<'s>,
    /// Named types already compiled (or being compiled: recursion), by full name.
    named: HashMap<Name, usize>,
    nodes: Vec<Node>,
    /// The reader's records by full name: each field's name and the cost of its default.
    reader_records: ReaderRecords,
}

/// A reader schema's records by full name: each field's name and what its default costs once
/// decoded (values, bytes); `None` for a field without a default.
type ReaderRecords = HashMap<Name, Vec<(String, Option<(usize, usize)>)>>;

/// Collects the records of a reader schema (see [`ReaderRecords`]).
fn collect_records(schema: &Schema, namespace: NamespaceRef<'_>, out: &mut ReaderRecords) {
    match schema {
        Schema::Record(r) => {
            let name = r.name.fully_qualified_name(namespace).into_owned();
            if out.contains_key(&name) {
                return;
            }
            let fields = r
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.default.as_ref().map(default_cost)))
                .collect();
            out.insert(name.clone(), fields);
            for f in &r.fields {
                collect_records(&f.schema, name.namespace(), out);
            }
        }
        Schema::Array(a) => collect_records(&a.items, namespace, out),
        Schema::Map(m) => collect_records(&m.types, namespace, out),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_records(v, namespace, out);
            }
        }
        _ => {}
    }
}

/// Values and bytes a default value takes once decoded: one slot per JSON node, plus its text.
fn default_cost(value: &serde_json::Value) -> (usize, usize) {
    fn walk(v: &serde_json::Value, items: &mut usize, bytes: &mut usize) {
        *items = items.saturating_add(1);
        *bytes = bytes.saturating_add(SLOT);
        match v {
            serde_json::Value::String(s) => *bytes = bytes.saturating_add(s.len()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, items, bytes)),
            serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
                *bytes = bytes.saturating_add(k.len().saturating_add(FIELD));
                walk(x, items, bytes);
            }),
            _ => {}
        }
    }
    let (mut items, mut bytes) = (0, 0);
    walk(value, &mut items, &mut bytes);
    (items, bytes)
}

impl Compiler<'_, '_> {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn compile(&mut self, schema: &Schema, namespace: NamespaceRef<'_>) -> Result<usize, String> {
        let fixed = |len: usize| Node::Raw { len, heap: true };
        Ok(match schema {
            Schema::Null => self.push(Node::Null),
            Schema::Boolean => self.push(Node::Boolean),
            Schema::Int | Schema::Date | Schema::TimeMillis => self.push(Node::Int),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.push(Node::Long),
            Schema::Float => self.push(Node::Raw {
                len: 4,
                heap: false,
            }),
            Schema::Double => self.push(Node::Raw {
                len: 8,
                heap: false,
            }),
            Schema::Bytes
            | Schema::String
            | Schema::BigDecimal
            | Schema::Uuid(UuidSchema::String | UuidSchema::Bytes)
            | Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Bytes,
                ..
            }) => self.push(Node::Length),
            Schema::Fixed(f)
            | Schema::Uuid(UuidSchema::Fixed(f))
            | Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Fixed(f),
                ..
            }) => self.push(fixed(f.size)),
            // apache-avro reads 12 bytes, or fails without reading when the size differs.
            Schema::Duration(f) => self.push(fixed(f.size.min(12))),
            Schema::Enum(e) => self.push(Node::Enum(e.symbols.iter().map(String::len).collect())),
            Schema::Array(a) => {
                let at = self.push(Node::Null);
                let items = self.compile(&a.items, namespace)?;
                self.nodes[at] = Node::Array(items);
                at
            }
            Schema::Map(m) => {
                let at = self.push(Node::Null);
                let values = self.compile(&m.types, namespace)?;
                self.nodes[at] = Node::Map(values);
                at
            }
            Schema::Union(u) => {
                let at = self.push(Node::Null);
                let branches = u
                    .variants()
                    .iter()
                    .map(|v| self.compile(v, namespace))
                    .collect::<Result<_, _>>()?;
                self.nodes[at] = Node::Union(branches);
                at
            }
            Schema::Record(r) => {
                let name = r.name.fully_qualified_name(namespace).into_owned();
                if let Some(&at) = self.named.get(&name) {
                    return Ok(at);
                }
                let at = self.push(Node::Null);
                self.named.insert(name.clone(), at);
                let mut fields = Vec::with_capacity(r.fields.len());
                let mut cost = 0usize;
                for field in &r.fields {
                    fields.push(self.compile(&field.schema, name.namespace())?);
                    cost = cost.saturating_add(FIELD.saturating_add(field.name.len()));
                }
                let mut extra = 0usize;
                if let Some(reader_fields) = self.reader_records.get(&name) {
                    for (field, default) in reader_fields {
                        if r.fields.iter().any(|w| &w.name == field) {
                            continue;
                        }
                        let (items, bytes) = default.unwrap_or((1, SLOT));
                        extra = extra.saturating_add(items);
                        cost = cost.saturating_add(
                            FIELD.saturating_add(field.len()).saturating_add(bytes),
                        );
                    }
                }
                self.nodes[at] = Node::Record {
                    fields,
                    cost,
                    extra,
                };
                at
            }
            Schema::Ref { name } => {
                let name = name.fully_qualified_name(namespace).into_owned();
                if let Some(&at) = self.named.get(&name) {
                    return Ok(at);
                }
                let Some(&target) = self.names.get(&name) else {
                    return Err(format!("writer schema: unresolved reference {name}"));
                };
                let at = self.compile(target, name.namespace())?;
                self.named.insert(name, at);
                at
            }
        })
    }
}

/// A lower bound of the bytes each node takes: iterated from zero a bounded number of times
/// (every iterate is a lower bound, recursive records included).
fn min_bytes(nodes: &[Node]) -> Vec<usize> {
    let mut min = vec![0usize; nodes.len()];
    for _ in 0..16 {
        let mut changed = false;
        for (i, node) in nodes.iter().enumerate() {
            let m = match node {
                Node::Null => 0,
                Node::Boolean | Node::Int | Node::Long | Node::Length | Node::Enum(_) => 1,
                Node::Raw { len, .. } => *len,
                // At least the terminating zero count.
                Node::Array(_) | Node::Map(_) => 1,
                Node::Union(branches) => {
                    1usize.saturating_add(branches.iter().map(|&b| min[b]).min().unwrap_or(0))
                }
                Node::Record { fields, .. } => fields
                    .iter()
                    .fold(0usize, |sum, &f| sum.saturating_add(min[f])),
            };
            if m != min[i] {
                min[i] = m;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    min
}

/// Why the walk stopped, and at which byte. Plain numbers: the walk recurses, so its frames
/// stay small; the message is written once, after it returns.
enum Stop {
    /// Over the item bound by declaring `more` values.
    Items { at: usize, more: usize },
    /// Over the decoded-bytes bound.
    Bytes { at: usize },
    /// Over the depth bound.
    Depth { at: usize },
    /// The body ends before the value does.
    Truncated,
    /// A varint of more than 10 bytes.
    LongVarint { at: usize },
    /// A negative string or bytes length.
    NegativeLength { at: usize, len: i64 },
    /// A block count that cannot be negated (`i64::MIN`).
    BlockCount { at: usize, count: i64 },
    /// An `int` outside 32 bits.
    IntRange { at: usize, value: i64 },
    /// An enum index out of range.
    EnumIndex {
        at: usize,
        index: i64,
        symbols: usize,
    },
    /// A union branch out of range.
    UnionBranch {
        at: usize,
        index: i64,
        branches: usize,
    },
}

impl Stop {
    #[cold]
    fn into_error(self, id: u32, body_len: usize, limits: &DecodeLimits) -> AvroError {
        let over = |reason: String| AvroError::OverLimit { id, reason };
        let body = |reason: String| AvroError::Body { id, reason };
        match self {
            Self::Items { at, more } => over(format!(
                "it declares more than {max} values ({MAX_ITEMS_VAR}={max}): {more} more at \
                 byte {at} of the body",
                max = limits.max_items,
            )),
            Self::Bytes { at } => over(format!(
                "it would decode into more than {max} bytes ({MAX_DECODED_BYTES_VAR}={max}) at \
                 byte {at} of the body",
                max = limits.max_decoded_bytes,
            )),
            Self::Depth { at } => over(format!(
                "records, arrays and maps nest deeper than {max} ({MAX_DEPTH_VAR}={max}) at \
                 byte {at} of the body",
                max = limits.max_depth,
            )),
            Self::Truncated => body(format!(
                "truncated: the {body_len}-byte body ends before the value does"
            )),
            Self::LongVarint { at } => {
                body(format!("the varint at byte {at} is longer than 10 bytes"))
            }
            Self::NegativeLength { at, len } => body(format!("negative length {len} at byte {at}")),
            Self::BlockCount { at, count } => body(format!("block count {count} at byte {at}")),
            Self::IntRange { at, value } => {
                body(format!("{value} at byte {at} does not fit an int"))
            }
            Self::EnumIndex { at, index, symbols } => body(format!(
                "enum index {index} at byte {at} is out of range ({symbols} symbols)"
            )),
            Self::UnionBranch {
                at,
                index,
                branches,
            } => body(format!(
                "union branch {index} at byte {at} is out of range ({branches} branches)"
            )),
        }
    }
}

struct Walk<'a> {
    shape: &'a Shape,
    limits: &'a DecodeLimits,
    body: &'a [u8],
    pos: usize,
    items: usize,
    bytes: usize,
    /// The deepest level entered.
    deepest: usize,
}

impl Walk<'_> {
    /// Charges `items` values taking `bytes` of decoded memory, before any is walked.
    fn charge(&mut self, items: usize, bytes: usize) -> Result<(), Stop> {
        self.items = self.items.saturating_add(items);
        if self.items > self.limits.max_items {
            return Err(Stop::Items {
                at: self.pos,
                more: items,
            });
        }
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_decoded_bytes {
            return Err(Stop::Bytes { at: self.pos });
        }
        Ok(())
    }

    /// Enters a record, array or map one level below `depth`.
    fn nest(&mut self, depth: usize) -> Result<usize, Stop> {
        let depth = depth + 1;
        if depth > self.limits.max_depth {
            return Err(Stop::Depth { at: self.pos });
        }
        self.deepest = self.deepest.max(depth);
        Ok(depth)
    }

    /// Skips `n` bytes that must be there.
    fn take(&mut self, n: usize) -> Result<(), Stop> {
        if n > self.body.len() - self.pos {
            return Err(Stop::Truncated);
        }
        self.pos += n;
        Ok(())
    }

    /// A zig-zag varint, read as apache-avro reads it (at most 10 bytes).
    fn long(&mut self) -> Result<i64, Stop> {
        let mut z = 0u64;
        for j in 0..10 {
            let Some(&byte) = self.body.get(self.pos) else {
                return Err(Stop::Truncated);
            };
            self.pos += 1;
            z |= u64::from(byte & 0x7f) << (j * 7);
            if byte & 0x80 == 0 {
                // Zig-zag, exactly as apache-avro undoes it.
                let half = (z >> 1) as i64;
                return Ok(if z & 1 == 0 { half } else { !half });
            }
        }
        Err(Stop::LongVarint { at: self.pos - 10 })
    }

    /// A length that must be present in the body and is kept on the heap once decoded.
    fn length(&mut self) -> Result<(), Stop> {
        let at = self.pos;
        let len = self.long()?;
        let Ok(len) = usize::try_from(len) else {
            return Err(Stop::NegativeLength { at, len });
        };
        if len > self.body.len() - self.pos {
            return Err(Stop::Truncated);
        }
        self.charge(0, len)?;
        self.pos += len;
        Ok(())
    }

    /// A block count and where it starts: 0 ends the array or map; a negative count is
    /// followed by the block's byte size (read and ignored, as apache-avro does).
    fn block(&mut self) -> Result<(usize, usize), Stop> {
        let at = self.pos;
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        let n = count
            .checked_abs()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(Stop::BlockCount { at, count })?;
        Ok((n, at))
    }

    /// Charges a block of `n` items of at least `least` bytes each whose slots cost `each`
    /// bytes, once it is clear the rest of the body can hold them.
    /// A bound crossed is reported at the block's count, which starts at `at`.
    fn charge_block(&mut self, at: usize, n: usize, least: usize, each: usize) -> Result<(), Stop> {
        if n.saturating_mul(least) > self.body.len() - self.pos {
            return Err(Stop::Truncated);
        }
        self.charge(n, n.saturating_mul(each))
            .map_err(|stop| match stop {
                Stop::Items { more, .. } => Stop::Items { at, more },
                Stop::Bytes { .. } => Stop::Bytes { at },
                other => other,
            })
    }

    /// Walks one value of `node` whose slot the caller has charged.
    fn value(&mut self, node: usize, depth: usize) -> Result<(), Stop> {
        match &self.shape.nodes[node] {
            Node::Null => Ok(()),
            Node::Boolean => self.take(1),
            Node::Int => {
                let at = self.pos;
                let v = self.long()?;
                if i32::try_from(v).is_err() {
                    return Err(Stop::IntRange { at, value: v });
                }
                Ok(())
            }
            Node::Long => self.long().map(drop),
            Node::Raw { len, heap } => {
                self.take(*len)?;
                if *heap {
                    self.charge(0, *len)?;
                }
                Ok(())
            }
            Node::Length => self.length(),
            Node::Enum(symbols) => {
                let at = self.pos;
                let index = self.long()?;
                let symbol = usize::try_from(index)
                    .ok()
                    .and_then(|i| symbols.get(i))
                    .ok_or(Stop::EnumIndex {
                        at,
                        index,
                        symbols: symbols.len(),
                    })?;
                self.charge(0, *symbol)
            }
            Node::Union(branches) => {
                let at = self.pos;
                let index = self.long()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or(Stop::UnionBranch {
                        at,
                        index,
                        branches: branches.len(),
                    })?;
                // The branch's value is boxed: one more slot.
                self.charge(1, SLOT)?;
                self.value(*branch, depth)
            }
            Node::Record {
                fields,
                cost,
                extra,
            } => {
                let depth = self.nest(depth)?;
                self.charge(fields.len().saturating_add(*extra), *cost)?;
                for &field in fields {
                    self.value(field, depth)?;
                }
                Ok(())
            }
            Node::Array(items) => {
                let depth = self.nest(depth)?;
                loop {
                    let (n, at) = self.block()?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.charge_block(at, n, self.shape.min_bytes[*items], SLOT)?;
                    for _ in 0..n {
                        self.value(*items, depth)?;
                    }
                }
            }
            Node::Map(values) => {
                let depth = self.nest(depth)?;
                loop {
                    let (n, at) = self.block()?;
                    if n == 0 {
                        return Ok(());
                    }
                    // Each entry: at least a key length, then its value.
                    let least = self.shape.min_bytes[*values].saturating_add(1);
                    self.charge_block(at, n, least, ENTRY)?;
                    for _ in 0..n {
                        self.length()?;
                        self.value(*values, depth)?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

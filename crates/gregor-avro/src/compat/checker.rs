//! apache-avro's schema-resolution rules (`schema_compatibility`), re-written to be bounded:
//! every comparison costs steps from a budget, results (failures too) are remembered per pair
//! of named or composite schema nodes, and a mismatch is a few references into the schemas,
//! kept in an arena and formatted briefly, only once, at the end. (apache-avro formats both
//! schemas with `{:#?}` at every mismatch and remembers only successes: a union of thousands
//! of records took minutes.)

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use apache_avro::Schema;
use apache_avro::schema::{
    ArraySchema, DecimalSchema, EnumSchema, InnerDecimalSchema, MapSchema, Name, RecordSchema,
    UuidSchema,
};

/// How well a reader reads a writer (apache-avro's `Compatibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    Full,
    Partial,
}

impl Fit {
    fn and(self, other: Self) -> Self {
        if self == Self::Full && other == Self::Full {
            Self::Full
        } else {
            Self::Partial
        }
    }
}

/// Why a reader cannot read a writer; borrowed from the schemas, formatted on demand.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mismatch<'a> {
    Types(&'a Schema, &'a Schema),
    Names(&'a Schema, &'a Schema),
    /// A field of the reader's record, and why (an index into the arena).
    Field(&'a str, Why),
    MissingDefault(&'a str),
    Symbols(&'a Schema, &'a Schema),
    Unions,
    NoBranch(&'a Schema, &'a Schema),
    Fixed(&'a Schema, &'a Schema),
    Decimal(&'a Schema, &'a Schema),
}

/// A mismatch, as its index in [`Checker`]'s arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Why(usize);

/// The budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OverBudget;

pub(super) type Outcome = Result<Fit, Why>;

/// Pointer pairs hash by a multiply: no need for SipHash's defence, the keys are addresses.
#[derive(Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Memo = HashMap<(*const Schema, *const Schema), Outcome, BuildHasherDefault<PtrHasher>>;

pub(super) struct Checker<'a> {
    memo: Memo,
    mismatches: Vec<Mismatch<'a>>,
    steps: u64,
    max_steps: u64,
}

/// Whether comparing `s` with anything is worth remembering: named and composite types.
fn composite(s: &Schema) -> bool {
    matches!(
        s,
        Schema::Record(_) | Schema::Union(_) | Schema::Array(_) | Schema::Map(_) | Schema::Enum(_)
    )
}

impl<'a> Checker<'a> {
    pub(super) fn new(max_steps: u64) -> Self {
        Self {
            memo: Memo::default(),
            mismatches: Vec::new(),
            steps: 0,
            max_steps,
        }
    }

    /// The steps spent so far.
    #[cfg(test)]
    pub(super) fn steps(&self) -> u64 {
        self.steps
    }

    /// A mismatch found, for display.
    pub(super) fn explain(&self, why: Why) -> Explained<'_, 'a> {
        Explained {
            arena: &self.mismatches,
            why,
        }
    }

    fn charge(&mut self, steps: usize) -> Result<(), OverBudget> {
        self.steps = self
            .steps
            .saturating_add(u64::try_from(steps).unwrap_or(u64::MAX));
        if self.steps > self.max_steps {
            Err(OverBudget)
        } else {
            Ok(())
        }
    }

    fn fail(&mut self, mismatch: Mismatch<'a>) -> Result<Outcome, OverBudget> {
        self.mismatches.push(mismatch);
        Ok(Err(Why(self.mismatches.len() - 1)))
    }

    /// Whether data written with `writer` can be read with `reader`.
    pub(super) fn can_read(
        &mut self,
        writer: &'a Schema,
        reader: &'a Schema,
    ) -> Result<Outcome, OverBudget> {
        self.charge(1)?;
        if !(composite(writer) && composite(reader)) {
            return self.compare(writer, reader);
        }
        let key = (std::ptr::from_ref(writer), std::ptr::from_ref(reader));
        if let Some(known) = self.memo.get(&key) {
            return Ok(*known);
        }
        let outcome = self.compare(writer, reader)?;
        self.memo.insert(key, outcome);
        Ok(outcome)
    }

    #[rustfmt::skip]
    fn compare(&mut self, w: &'a Schema, r: &'a Schema) -> Result<Outcome, OverBudget> {
        use Schema as S;
        if let (Some(wn), Some(rn)) = (w.name(), r.name())
            && wn.name() != rn.name()
        {
            return self.fail(Mismatch::Names(w, r));
        }
        let full = Ok(Ok(Fit::Full));
        match (w, r) {
            (S::Ref { name: wn }, S::Ref { name: rn }) => {
                if wn == rn { full } else { self.fail(Mismatch::Names(w, r)) }
            }
            (S::Union(wu), S::Union(ru)) => {
                let (mut any, mut all) = (false, true);
                for wb in wu.variants() {
                    let mut found = false;
                    for rb in ru.variants() {
                        match self.can_read(wb, rb)? {
                            Ok(Fit::Full) => { any = true; found = true; break; }
                            Ok(Fit::Partial) => any = true,
                            Err(_) => {}
                        }
                    }
                    all &= found;
                }
                if all { full } else if any { Ok(Ok(Fit::Partial)) } else { self.fail(Mismatch::Unions) }
            }
            (S::Union(wu), _) => {
                let (mut any, mut all) = (false, true);
                for wb in wu.variants() {
                    match self.can_read(wb, r)? {
                        Ok(Fit::Full) => any = true,
                        Ok(Fit::Partial) => { any = true; all = false; }
                        Err(_) => all = false,
                    }
                }
                if all { full } else if any { Ok(Ok(Fit::Partial)) } else { self.fail(Mismatch::NoBranch(w, r)) }
            }
            (_, S::Union(ru)) => {
                let mut partial = false;
                for rb in ru.variants() {
                    match self.can_read(w, rb)? {
                        Ok(Fit::Full) => return full,
                        Ok(Fit::Partial) => partial = true,
                        Err(_) => {}
                    }
                }
                if partial { Ok(Ok(Fit::Partial)) } else { self.fail(Mismatch::NoBranch(w, r)) }
            }
            (S::Null, S::Null) | (S::Boolean, S::Boolean) => full,
            (
                S::Int | S::Date | S::TimeMillis,
                S::Int | S::Long | S::Float | S::Double | S::Date | S::TimeMillis | S::TimeMicros
                | S::TimestampMillis | S::TimestampMicros | S::TimestampNanos
                | S::LocalTimestampMillis | S::LocalTimestampMicros | S::LocalTimestampNanos,
            ) => full,
            (
                S::Long | S::TimeMicros | S::TimestampMillis | S::TimestampMicros
                | S::TimestampNanos | S::LocalTimestampMillis | S::LocalTimestampMicros
                | S::LocalTimestampNanos,
                S::Long | S::Float | S::Double | S::TimeMicros | S::TimestampMillis
                | S::TimestampMicros | S::TimestampNanos | S::LocalTimestampMillis
                | S::LocalTimestampMicros | S::LocalTimestampNanos,
            ) => full,
            (S::Float, S::Float | S::Double) | (S::Double, S::Double) => full,
            (
                S::Decimal(DecimalSchema { precision: wp, scale: ws, .. }),
                S::Decimal(DecimalSchema { precision: rp, scale: rs, .. }),
            ) => if wp == rp && ws == rs { full } else { self.fail(Mismatch::Decimal(w, r)) },
            (
                S::Bytes | S::String | S::BigDecimal | S::Uuid(UuidSchema::String | UuidSchema::Bytes)
                | S::Decimal(DecimalSchema { inner: InnerDecimalSchema::Bytes, .. }),
                S::Bytes | S::String | S::BigDecimal | S::Uuid(UuidSchema::String | UuidSchema::Bytes)
                | S::Decimal(DecimalSchema { inner: InnerDecimalSchema::Bytes, .. }),
            ) => full,
            (S::Uuid(_), S::Uuid(_)) => full,
            (
                S::Fixed(wf) | S::Uuid(UuidSchema::Fixed(wf))
                | S::Decimal(DecimalSchema { inner: InnerDecimalSchema::Fixed(wf), .. })
                | S::Duration(wf),
                S::Fixed(rf) | S::Uuid(UuidSchema::Fixed(rf))
                | S::Decimal(DecimalSchema { inner: InnerDecimalSchema::Fixed(rf), .. })
                | S::Duration(rf),
            ) => if wf.size == rf.size { full } else { self.fail(Mismatch::Fixed(w, r)) },
            (S::Array(ArraySchema { items: wi, .. }), S::Array(ArraySchema { items: ri, .. })) => {
                self.can_read(wi, ri)
            }
            (S::Map(MapSchema { types: wt, .. }), S::Map(MapSchema { types: rt, .. })) => {
                self.can_read(wt, rt)
            }
            (
                S::Enum(EnumSchema { symbols: wsym, .. }),
                S::Enum(EnumSchema { symbols: rsym, default, .. }),
            ) => {
                if default.is_some() {
                    return full;
                }
                self.charge(wsym.len().saturating_add(rsym.len()))?;
                let known: HashSet<&str> = rsym.iter().map(String::as_str).collect();
                let found = wsym.iter().filter(|s| known.contains(s.as_str())).count();
                if found == wsym.len() { full }
                else if found > 0 { Ok(Ok(Fit::Partial)) }
                else { self.fail(Mismatch::Symbols(w, r)) }
            }
            (S::Record(RecordSchema { fields: wf, .. }), S::Record(RecordSchema { fields: rf, .. })) => {
                // Few fields: search them; many: index the writer's by name first.
                let small = wf.len().saturating_mul(rf.len()) <= 64;
                let mut by_name = HashMap::new();
                if small {
                    self.charge(wf.len().saturating_mul(rf.len()))?;
                } else {
                    self.charge(wf.len().saturating_add(rf.len()))?;
                    by_name.reserve(wf.len());
                    for field in wf {
                        by_name.entry(field.name.as_str()).or_insert(field);
                    }
                }
                let mut fit = Fit::Full;
                for field in rf {
                    self.charge(field.aliases.len())?;
                    let written = std::iter::once(&field.name)
                        .chain(&field.aliases)
                        .find_map(|name| {
                            if small {
                                wf.iter().find(|f| f.name == *name)
                            } else {
                                by_name.get(name.as_str()).copied()
                            }
                        });
                    match written {
                        Some(written) => match self.can_read(&written.schema, &field.schema)? {
                            Ok(f) => fit = fit.and(f),
                            Err(why) => return self.fail(Mismatch::Field(&field.name, why)),
                        },
                        None if field.default.is_none() => {
                            return self.fail(Mismatch::MissingDefault(&field.name));
                        }
                        None => {}
                    }
                }
                Ok(Ok(fit))
            }
            _ => self.fail(Mismatch::Types(w, r)),
        }
    }
}

/// At most this many characters of a name in a message.
const NAME_CHARS: usize = 64;
/// At most this many field names in a message's path.
const PATH_FIELDS: usize = 8;

/// A name, cut to [`NAME_CHARS`].
struct Short<'a>(&'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(NAME_CHARS) {
            Some((end, _)) => write!(f, "{}…", &self.0[..end]),
            None => f.write_str(self.0),
        }
    }
}

fn fullname(name: &Name) -> String {
    name.fullname(None)
}

/// A schema in a few words: its type, and its name for named types.
struct Brief<'a>(&'a Schema);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Schema as S;
        let simple = match self.0 {
            S::Null => "null",
            S::Boolean => "boolean",
            S::Int => "int",
            S::Long => "long",
            S::Float => "float",
            S::Double => "double",
            S::Bytes => "bytes",
            S::String => "string",
            S::Array(_) => "array",
            S::Map(_) => "map",
            S::BigDecimal => "big-decimal",
            S::Date => "date",
            S::TimeMillis => "time-millis",
            S::TimeMicros => "time-micros",
            S::TimestampMillis => "timestamp-millis",
            S::TimestampMicros => "timestamp-micros",
            S::TimestampNanos => "timestamp-nanos",
            S::LocalTimestampMillis => "local-timestamp-millis",
            S::LocalTimestampMicros => "local-timestamp-micros",
            S::LocalTimestampNanos => "local-timestamp-nanos",
            S::Uuid(_) => "uuid",
            S::Union(u) => return write!(f, "union of {}", u.variants().len()),
            S::Decimal(d) => return write!(f, "decimal({}, {})", d.precision, d.scale),
            S::Record(x) => return write!(f, "record {}", Short(&fullname(&x.name))),
            S::Enum(x) => return write!(f, "enum {}", Short(&fullname(&x.name))),
            S::Fixed(x) => {
                return write!(f, "fixed {} ({} bytes)", Short(&fullname(&x.name)), x.size);
            }
            S::Duration(_) => "duration",
            S::Ref { name } => return write!(f, "{}", Short(&fullname(name))),
        };
        f.write_str(simple)
    }
}

/// A mismatch with the arena it points into.
pub(super) struct Explained<'c, 'a> {
    arena: &'c [Mismatch<'a>],
    why: Why,
}

impl fmt::Display for Explained<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |why: Why| self.arena.get(why.0).copied().unwrap_or(Mismatch::Unions);
        // The path of record fields down to the leaf.
        let mut path = Vec::new();
        let mut leaf = at(self.why);
        while let Mismatch::Field(name, inner) = leaf {
            path.push(name);
            leaf = at(inner);
        }
        if let Mismatch::MissingDefault(name) = leaf {
            path.push(name);
        }
        if !path.is_empty() {
            let half = PATH_FIELDS / 2;
            let cut = path.len() > PATH_FIELDS;
            f.write_str("Field '")?;
            for (i, name) in path.iter().enumerate() {
                if cut && i >= half && i < path.len() - half {
                    if i == half {
                        f.write_str(".…")?;
                    }
                    continue;
                }
                if i > 0 {
                    f.write_str(".")?;
                }
                write!(f, "{}", Short(name))?;
            }
            f.write_str("'")?;
            if !matches!(leaf, Mismatch::MissingDefault(_)) {
                f.write_str(": ")?;
            }
        }
        match leaf {
            Mismatch::Types(w, r) => {
                write!(
                    f,
                    "the writer's {} cannot be read as {}",
                    Brief(w),
                    Brief(r)
                )
            }
            Mismatch::Names(w, r) => write!(
                f,
                "the writer's {} and the reader's {} have different names",
                Brief(w),
                Brief(r)
            ),
            Mismatch::Field(..) => Ok(()),
            Mismatch::MissingDefault(_) => {
                f.write_str(" of the reader's record is not in the writer's and has no default")
            }
            Mismatch::Symbols(w, r) => write!(
                f,
                "the reader's {} has none of the symbols of the writer's {}",
                Brief(r),
                Brief(w)
            ),
            Mismatch::Unions => f.write_str(
                "no branch of the writer's union can be read by a branch of the reader's union",
            ),
            Mismatch::NoBranch(w @ Schema::Union(_), r) => write!(
                f,
                "no branch of the writer's {} can be read as {}",
                Brief(w),
                Brief(r)
            ),
            Mismatch::NoBranch(w, r) => write!(
                f,
                "no branch of the reader's {} can read the writer's {}",
                Brief(r),
                Brief(w)
            ),
            Mismatch::Fixed(w, r) => write!(
                f,
                "the writer's {} and the reader's {} differ in size",
                Brief(w),
                Brief(r)
            ),
            Mismatch::Decimal(w, r) => write!(
                f,
                "the writer's {} and the reader's {} differ in precision or scale",
                Brief(w),
                Brief(r)
            ),
        }
    }
}

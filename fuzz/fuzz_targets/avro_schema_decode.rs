//! A fuzzed writer schema *and* fuzzed bytes through the bounded decoder: nested arrays, maps,
//! unions, recursive records, fixed and enums in any arrangement, under small fuzzed limits.
//!
//! Beyond "no panic, no hang", each input checks the bounds themselves: a value that decodes
//! has at most `max_items` values and `max_depth` levels, and decoding it — accepted or
//! refused — never holds more than twice `max_decoded_bytes` (plus a fixed allowance for
//! building the plan) at once, measured by a counting allocator.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use apache_avro::types::Value as V;
use gregor_avro::{AvroDeserializer, DecodeLimits, RegistryClient, RegistryConfig, Schema, wire};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value as Json, json};

/// Live heap bytes, and the most seen since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Old and new may coexist while copying: count both, then settle.
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A writer type. Deep trees are cut to `null` when turned into a schema.
#[derive(Arbitrary, Debug)]
enum Ty {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Date,
    TimestampMicros,
    Uuid,
    DecimalBytes,
    Fixed(u8),
    Enum(u8),
    Array(Box<Ty>),
    Map(Box<Ty>),
    /// A union of `null` and this type (unions cannot nest directly).
    Optional(Box<Ty>),
    Union(Vec<Ty>),
    Record(Vec<Ty>),
    /// The nearest enclosing record, by name: recursion.
    SelfRef,
}

/// The body first (its length comes from the input's tail, so bodies and schemas both get
/// bytes), then the limits (a zero picks a roomy value, so most inputs reach the decoder),
/// then the schema from whatever is left.
#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    max_items: u16,
    max_decoded_bytes: u32,
    max_depth: u8,
    root: Ty,
}

struct Names {
    next: usize,
    records: Vec<String>,
}

impl Names {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }
}

fn schema(ty: &Ty, depth: usize, names: &mut Names) -> Json {
    if depth > 8 {
        return json!("null");
    }
    match ty {
        Ty::Null => json!("null"),
        Ty::Boolean => json!("boolean"),
        Ty::Int => json!("int"),
        Ty::Long => json!("long"),
        Ty::Float => json!("float"),
        Ty::Double => json!("double"),
        Ty::Bytes => json!("bytes"),
        Ty::String => json!("string"),
        Ty::Date => json!({"type": "int", "logicalType": "date"}),
        Ty::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
        Ty::Uuid => json!({"type": "string", "logicalType": "uuid"}),
        Ty::DecimalBytes => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2})
        }
        Ty::Fixed(size) => json!({"type": "fixed", "name": names.fresh("F"), "size": size}),
        Ty::Enum(n) => {
            let symbols: Vec<String> = (0..=(n % 8)).map(|i| format!("S{i}")).collect();
            json!({"type": "enum", "name": names.fresh("E"), "symbols": symbols})
        }
        Ty::Array(items) => json!({"type": "array", "items": schema(items, depth + 1, names)}),
        Ty::Map(values) => json!({"type": "map", "values": schema(values, depth + 1, names)}),
        Ty::Optional(inner) => match schema(inner, depth + 1, names) {
            Json::String(s) if s == "null" => json!(["null"]),
            Json::Array(_) => json!("null"),
            other => json!(["null", other]),
        },
        Ty::Union(branches) => {
            // Unions may not hold unions, nor two branches of one unnamed kind: keep the
            // first of each kind; apache-avro refuses the rest at parse time anyway.
            let mut seen = Vec::new();
            let mut out = Vec::new();
            for branch in branches.iter().take(4) {
                let s = schema(branch, depth + 1, names);
                let kind = match &s {
                    Json::Array(_) => continue,
                    Json::String(t) => t.clone(),
                    Json::Object(o) => match o.get("name") {
                        Some(n) => n.to_string(),
                        None => o.get("type").map(|t| t.to_string()).unwrap_or_default(),
                    },
                    _ => continue,
                };
                if !seen.contains(&kind) {
                    seen.push(kind);
                    out.push(s);
                }
            }
            Json::Array(out)
        }
        Ty::Record(fields) => {
            let name = names.fresh("R");
            names.records.push(name.clone());
            let fields: Vec<Json> = fields
                .iter()
                .take(6)
                .enumerate()
                .map(|(i, f)| json!({"name": format!("f{i}"), "type": schema(f, depth + 1, names)}))
                .collect();
            names.records.pop();
            json!({"type": "record", "name": name, "fields": fields})
        }
        Ty::SelfRef => names
            .records
            .last()
            .map_or(json!("null"), |name| json!(name)),
    }
}

/// Values (as the budget counts them) and nesting depth of a decoded value.
fn measure(value: &V, depth: usize, items: &mut usize, max_depth: &mut usize) {
    *items += 1;
    match value {
        V::Record(fields) => {
            *max_depth = (*max_depth).max(depth + 1);
            for (_, v) in fields {
                measure(v, depth + 1, items, max_depth);
            }
        }
        V::Array(vs) => {
            *max_depth = (*max_depth).max(depth + 1);
            for v in vs {
                measure(v, depth + 1, items, max_depth);
            }
        }
        V::Map(vs) => {
            *max_depth = (*max_depth).max(depth + 1);
            for v in vs.values() {
                measure(v, depth + 1, items, max_depth);
            }
        }
        V::Union(_, v) => measure(v, depth, items, max_depth),
        _ => {}
    }
}

struct Harness {
    client: RegistryClient,
    runtime: tokio::runtime::Runtime,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness {
        // Nothing listens on port 9: schemas are inserted, never fetched.
        client: RegistryClient::new(RegistryConfig::new("http://127.0.0.1:9")).expect("client"),
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime"),
    })
}

fuzz_target!(|input: Input| {
    let mut names = Names {
        next: 0,
        records: Vec::new(),
    };
    let text = schema(&input.root, 0, &mut names).to_string();
    let Ok(writer) = Schema::parse_str(&text) else {
        return;
    };
    let roomy = |raw: usize, roomy: usize, modulo: usize| {
        if raw == 0 { roomy } else { 1 + raw % modulo }
    };
    let limits = DecodeLimits {
        max_items: roomy(usize::from(input.max_items), 100_000, 100_000),
        max_decoded_bytes: roomy(input.max_decoded_bytes as usize, 1 << 20, 4 << 20),
        max_depth: roomy(usize::from(input.max_depth), 32, 40),
    };
    let harness = harness();
    // Schema id 1 now names this input's writer; a fresh deserializer has no cached plan.
    harness.client.insert_schema(1, writer);
    let decoder =
        AvroDeserializer::<()>::writer_schema_only(harness.client.clone()).with_limits(limits);
    let framed = wire::frame(1, &input.body);
    let runtime = &harness.runtime;

    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let result = runtime.block_on(decoder.decode_value(&framed));
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);

    // Building the plan (schema compile, apache-avro's reader) is paid once per schema id.
    let allowance = 1 << 20;
    assert!(
        peak <= 2 * limits.max_decoded_bytes + allowance,
        "decoding held {peak} bytes at once under {limits:?} ({text})"
    );
    if let Ok(value) = &result {
        let (mut items, mut depth) = (0, 0);
        measure(value, 0, &mut items, &mut depth);
        assert!(
            items <= limits.max_items,
            "{items} values under {limits:?} ({text})"
        );
        assert!(
            depth <= limits.max_depth,
            "depth {depth} under {limits:?} ({text})"
        );
    }
});

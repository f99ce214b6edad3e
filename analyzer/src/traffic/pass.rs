//! The one pass over the window's records that gathers the [`Evidence`] of every traffic analysis, so the
//! window's files are decoded once: pairing each request's client and server records ([`mtls`](super::mtls)
//! coverage, and each edge's errors and latency), counting the tries each destination logged per request
//! ([`resilience`](super::resilience)'s retries), tallying what else single records tell per destination
//! service ([`Tallies`]: server latency, error bursts, errors per endpoint), and grouping the client-side
//! requests by the route they took ([`routes`](super::routes) usage, per-service failures, the call graph).
//!
//! Both group a window's records by request id. As SQL that is a hash join of the client and server sides
//! on two strings, a grouping of the joined rows by nine columns, and a second grouping by request id: two
//! thirds of the analysis of 10M records (docs/benchmarks.md). Here each record is reduced as it streams in
//! to a 128-bit hash of its key (request id, destination service), an interned id of its strings and a few
//! numbers, and scattered by key over shards small enough for the cache; the shards are then sorted and
//! paired in parallel, and only the few resulting groups are turned back into strings.
//!
//! Pairing rules, per key: each server record is one try and counts once, with the server's mTLS verdict
//! (the client's when the server's is `unknown`) and the client's status and duration. It pairs with the
//! latest client record logged at or before it (the earliest when none was), so a client that called the
//! same service twice under one request id has each call paired with its own tries, and the calls are not
//! mistaken for retries. Records without a partner count on their own; so do records without a request id.
//! Where only the destination logged, its records of one key and method are the tries of one request.

use super::mtls::{EdgeKey, EdgeRow};
use super::recommend::EndpointRow;
use super::resilience::{BURST_MIN_ERRORS, BURST_SECONDS, BurstRow, Bursts, Retries, RetryRow};
use super::routes::{Attributor, ClientRow, ClientTraffic, FailureFlags, Matcher, RouteKey, lists_path};
use super::stats::{Histogram, Latency};
use super::{Evidence, TrafficError, Window};
use chrono::DateTime;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, RecordBatch, StringViewArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, TimeUnit, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use meshlens_model::mesh::MeshConfig;
use meshlens_model::record::Mtls;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

/// Shards records are scattered over by key; 10M records make shards of ~40k, whose sort stays in cache.
const SHARDS: usize = 256;

/// The records the pass reads: every server record, client records, and NR records whatever their
/// direction (they never reached a cluster, so the proxy may not know it).
fn records_sql(window: &Window) -> String {
    format!(
        "SELECT request_id, direction = 'inbound' AS inbound, direction = 'outbound' AS outbound, timestamp,
                reporter, source_namespace, source_workload, downstream_remote_address, authority, path, method,
                route_name, destination_service, destination_subset, destination_namespace, destination_workload,
                upstream_cluster, upstream_host, mtls, status, response_flags, duration_ms, attempts
         FROM requests
         WHERE {} AND (direction IN ('inbound', 'outbound') OR array_has(response_flags, 'NR'))",
        window.sql()
    )
}

/// Runs the pass over the window: one scan per partition of the query, then the shards in parallel.
pub(super) async fn gather(ctx: &SessionContext, mesh: &MeshConfig, window: &Window) -> Result<Evidence, TrafficError> {
    let streams = ctx.sql(&records_sql(window)).await?.execute_stream_partitioned().await?;
    let workers = streams.len().max(1);
    let catalog = Arc::new(Mutex::new(Catalog::default()));
    let key_hasher = KeyHasher::default();
    let mesh = Arc::new(mesh.clone());
    let scans: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let mut scan = Scan::new(Arc::clone(&catalog), key_hasher.clone());
            let mesh = Arc::clone(&mesh);
            SpawnedTask::spawn(async move {
                let attributor = Attributor::new(&mesh);
                while let Some(batch) = stream.next().await {
                    scan.add(&batch?, &attributor)?;
                }
                Ok::<_, TrafficError>(scan)
            })
        })
        .collect();

    let mut shards: Vec<Vec<Reduced>> = (0..SHARDS).map(|_| Vec::new()).collect();
    let mut groups = Groups::default();
    let mut tallies = Tallies::default();
    for scan in scans {
        let scan = scan.join_unwind().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
        groups.merge(scan.groups);
        tallies.merge(scan.tallies);
        for (shard, mut records) in shards.iter_mut().zip(scan.shards) {
            if shard.is_empty() {
                *shard = records;
            } else {
                shard.append(&mut records);
            }
        }
    }
    // Every scan has ended, so the catalog is no longer shared.
    let catalog = Arc::into_inner(catalog)
        .ok_or_else(|| DataFusionError::Internal("a scan of the request pairing outlived it".into()))?;
    let catalog = Arc::new(catalog.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));

    let per_worker = SHARDS.div_ceil(workers);
    let mut pairing = Vec::with_capacity(workers);
    while !shards.is_empty() {
        let batch: Vec<Vec<Reduced>> = shards.drain(..per_worker.min(shards.len())).collect();
        let catalog = Arc::clone(&catalog);
        pairing.push(SpawnedTask::spawn_blocking(move || {
            let mut groups = Groups::default();
            let mut run = RunBuffers::default();
            for mut shard in batch {
                shard.sort_unstable_by_key(|r| (r.key, r.timestamp));
                for records in shard.chunk_by(|a, b| a.key == b.key) {
                    run.pair(records, &catalog, &mut groups);
                }
            }
            groups
        }));
    }
    for task in pairing {
        groups.merge(task.join_unwind().await.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?);
    }
    Ok(groups.resolve(&catalog, tallies))
}

/// A record reduced to what pairing and try counting read.
struct Reduced {
    /// Hash of (request id, destination service).
    key: (u64, u64),
    /// Microseconds since the epoch.
    timestamp: i64,
    /// Narrower than the column, as are the attempts: the shards hold every keyed record of the window, so
    /// each byte here is ten megabytes at 10M records. Longer durations (49 days) and more attempts count
    /// as the largest value.
    duration_ms: Option<u32>,
    attempts: Option<u16>,
    /// Interned [`Attributes`].
    attributes: u32,
    status: Option<u16>,
    mtls: Mtls,
    server: bool,
}

const _: () = assert!(std::mem::size_of::<Reduced>() <= 48, "a reduced record outgrew 48 bytes");

impl Reduced {
    fn failed(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// The strings of a record that end up in its edge (and, for a server record, its method), the same for
/// most records of a window, so numbered once: `S` is a [`StrId`] while the pass runs, `&str` after.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
struct Attributes<S> {
    source_namespace: Option<S>,
    source_workload: Option<S>,
    /// The peer's IP, on a server record that names no source workload.
    source_address: Option<S>,
    destination_service: Option<S>,
    destination_namespace: Option<S>,
    destination_workload: Option<S>,
    /// The server's inbound cluster (`inbound|8080||`).
    upstream_cluster: Option<S>,
    /// The server's method: tries are counted per method.
    method: Option<S>,
}

impl Attributes<StrId> {
    fn resolve<'a>(&self, catalog: &'a Catalog) -> Attributes<&'a str> {
        let s = |id| catalog.resolve(id);
        Attributes {
            source_namespace: s(self.source_namespace),
            source_workload: s(self.source_workload),
            source_address: s(self.source_address),
            destination_service: s(self.destination_service),
            destination_namespace: s(self.destination_namespace),
            destination_workload: s(self.destination_workload),
            upstream_cluster: s(self.upstream_cluster),
            method: s(self.method),
        }
    }
}

/// The number of a distinct string of the pass.
type StrId = NonZeroU32;

/// The strings and [`Attributes`] of the pass, numbered in order of arrival, shared by the scans.
#[derive(Default)]
struct Catalog {
    string_ids: HashTable<StrId>,
    strings: Vec<Box<str>>,
    attribute_ids: HashMap<Attributes<StrId>, u32>,
    attributes: Vec<Attributes<StrId>>,
    hasher: DefaultHashBuilder,
}

impl Catalog {
    fn string_id(&mut self, value: &str) -> StrId {
        let Catalog { string_ids, strings, hasher, .. } = self;
        let hash = hasher.hash_one(value);
        if let Some(&id) = string_ids.find(hash, |&id| &*strings[id.get() as usize - 1] == value) {
            return id;
        }
        strings.push(value.into());
        let id = StrId::new(u32::try_from(strings.len()).unwrap_or(u32::MAX)).unwrap_or(StrId::MAX);
        string_ids.insert_unique(hash, id, |&id| hasher.hash_one(&*strings[id.get() as usize - 1]));
        id
    }

    fn string(&self, id: StrId) -> &str {
        &self.strings[id.get() as usize - 1]
    }

    fn resolve(&self, id: Option<StrId>) -> Option<&str> {
        id.map(|id| self.string(id))
    }

    fn attributes_id(&mut self, value: Attributes<StrId>) -> u32 {
        let next = u32::try_from(self.attributes.len()).unwrap_or(u32::MAX);
        *self.attribute_ids.entry(value).or_insert_with(|| {
            self.attributes.push(value);
            next
        })
    }

    fn attributes(&self, id: u32) -> Attributes<&str> {
        self.attributes[id as usize].resolve(self)
    }

    fn method(&self, attributes: u32) -> Option<StrId> {
        self.attributes[attributes as usize].method
    }
}

/// A scan's caches in front of the shared [`Catalog`], so that the lock is taken once per distinct
/// string or attribute set the scan meets, not once per record.
struct ScanCatalog {
    shared: Arc<Mutex<Catalog>>,
    strings: HashMap<Box<str>, StrId>,
    attributes: HashMap<Attributes<StrId>, u32>,
    /// The ids of the views of the column being read. Parquet's dictionary decoding gives every
    /// occurrence of a value in a column chunk the same view, so most rows are found here without
    /// reading their bytes. Only valid within one array: longer views point into its buffers.
    views: HashMap<u128, StrId>,
}

impl ScanCatalog {
    fn shared(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn string_id(&mut self, value: &str) -> StrId {
        if let Some(&id) = self.strings.get(value) {
            return id;
        }
        let id = self.shared().string_id(value);
        self.strings.insert(value.into(), id);
        id
    }

    /// The ids of a column's values, in `ids`.
    fn column(&mut self, array: &StringViewArray, ids: &mut Vec<Option<StrId>>) {
        self.views.clear();
        ids.clear();
        ids.extend(array.views().iter().enumerate().map(|(row, &view)| {
            if array.is_null(row) {
                return None;
            }
            if let Some(&id) = self.views.get(&view) {
                return Some(id);
            }
            let id = self.string_id(array.value(row));
            self.views.insert(view, id);
            Some(id)
        }));
    }

    fn attributes_id(&mut self, value: Attributes<StrId>) -> u32 {
        if let Some(&id) = self.attributes.get(&value) {
            return id;
        }
        let id = self.shared().attributes_id(value);
        self.attributes.insert(value, id);
        id
    }
}

/// A 128-bit hash of a record's key from two independently seeded 64-bit hashes: two different keys of a
/// window of n requests share one with probability about n²/2¹²⁹ (1e-25 for 10M).
#[derive(Clone, Default)]
struct KeyHasher(DefaultHashBuilder, DefaultHashBuilder);

impl KeyHasher {
    fn key(&self, request_id: &str, destination_service: StrId) -> (u64, u64) {
        let key = (request_id, destination_service);
        (self.0.hash_one(key), self.1.hash_one(key))
    }
}

/// One partition's scan: records with a key scattered over the shards, records without one counted at once,
/// client-side records grouped.
struct Scan {
    catalog: ScanCatalog,
    key_hasher: KeyHasher,
    shards: Vec<Vec<Reduced>>,
    groups: Groups,
    tallies: Tallies,
    /// Per column, the ids of the batch being read.
    columns: [Vec<Option<StrId>>; 14],
    /// mTLS values by id.
    mtls: HashMap<StrId, Mtls>,
    /// Route attributions by what they look at: most requests share theirs with many others, so the
    /// route table is evaluated once per distinct key.
    routes: HashMap<RouteIds, i32>,
    matcher: Matcher,
}

/// A [`RouteKey`] of interned strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteIds {
    reporter: Option<StrId>,
    source_namespace: Option<StrId>,
    source_workload: Option<StrId>,
    authority: Option<StrId>,
    path: Option<StrId>,
    method: Option<StrId>,
    route_name: Option<StrId>,
    no_route: bool,
}

fn named<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, TrafficError> {
    let column = batch.column_by_name(name);
    Ok(column.ok_or_else(|| DataFusionError::Execution(format!("the requests query returned no column {name}")))?)
}

/// A column of `batch` as `data_type`, cast when the table stores it otherwise.
fn column(batch: &RecordBatch, name: &str, data_type: &DataType) -> Result<ArrayRef, TrafficError> {
    let column = named(batch, name)?;
    Ok(if column.data_type() == data_type { Arc::clone(column) } else { cast(column, data_type)? })
}

fn strings(batch: &RecordBatch, name: &str) -> Result<StringViewArray, TrafficError> {
    Ok(column(batch, name, &DataType::Utf8View)?.as_string_view().clone())
}

fn primitives<T: ArrowPrimitiveType>(batch: &RecordBatch, name: &str) -> Result<PrimitiveArray<T>, TrafficError> {
    Ok(column(batch, name, &T::DATA_TYPE)?.as_primitive::<T>().clone())
}

/// The `timestamp` column in microseconds, keeping its time zone (a cast to a zoneless type would shift
/// the values to local time).
fn timestamps(batch: &RecordBatch) -> Result<PrimitiveArray<TimestampMicrosecondType>, TrafficError> {
    let column = named(batch, "timestamp")?;
    let DataType::Timestamp(_, zone) = column.data_type() else {
        let message = format!("the requests query returned timestamp as {}", column.data_type());
        return Err(DataFusionError::Execution(message).into());
    };
    let micros = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()))?;
    Ok(micros.as_primitive::<TimestampMicrosecondType>().clone())
}

/// Per row, the [`FailureFlags`] of its `response_flags` list.
fn failure_flags(batch: &RecordBatch) -> Result<Vec<FailureFlags>, TrafficError> {
    let column = named(batch, "response_flags")?;
    let Some(lists) = column.as_list_opt::<i32>() else {
        let message = format!("the requests query returned response_flags as {}", column.data_type());
        return Err(DataFusionError::Execution(message).into());
    };
    let values = cast(lists.values(), &DataType::Utf8View)?;
    let values = values.as_string_view();
    Ok(lists
        .offsets()
        .windows(2)
        .enumerate()
        .map(|(row, range)| {
            let mut flags = FailureFlags::default();
            if lists.is_valid(row) {
                for index in range[0] as usize..range[1] as usize {
                    if values.is_valid(index) {
                        flags.insert(FailureFlags::named(values.value(index)));
                    }
                }
            }
            flags
        })
        .collect())
}

fn value(array: &StringViewArray, row: usize) -> Option<&str> {
    array.is_valid(row).then(|| array.value(row))
}

/// `10.244.9.7:51234` without its port, as `regexp_replace(address, ':[0-9]+$', '')` would leave it.
fn without_port(address: &str) -> &str {
    let digits = address.len() - address.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    match address[..address.len() - digits].strip_suffix(':') {
        Some(host) if digits > 0 => host,
        _ => address,
    }
}

impl Scan {
    fn new(shared: Arc<Mutex<Catalog>>, key_hasher: KeyHasher) -> Scan {
        Scan {
            catalog: ScanCatalog {
                shared,
                strings: HashMap::default(),
                attributes: HashMap::default(),
                views: HashMap::default(),
            },
            key_hasher,
            shards: (0..SHARDS).map(|_| Vec::new()).collect(),
            groups: Groups::default(),
            tallies: Tallies::default(),
            columns: Default::default(),
            mtls: HashMap::default(),
            routes: HashMap::default(),
            matcher: Matcher::default(),
        }
    }

    fn add(&mut self, batch: &RecordBatch, attributor: &Attributor<'_>) -> Result<(), TrafficError> {
        let request_id = strings(batch, "request_id")?;
        let inbound = column(batch, "inbound", &DataType::Boolean)?;
        let inbound: &BooleanArray = inbound.as_boolean();
        let outbound = column(batch, "outbound", &DataType::Boolean)?;
        let outbound: &BooleanArray = outbound.as_boolean();
        let flags = failure_flags(batch)?;
        let timestamp = timestamps(batch)?;
        let remote_address = strings(batch, "downstream_remote_address")?;
        let status = primitives::<UInt16Type>(batch, "status")?;
        let duration_ms = primitives::<UInt64Type>(batch, "duration_ms")?;
        let attempts = primitives::<UInt32Type>(batch, "attempts")?;
        let names = [
            "source_namespace",
            "source_workload",
            "destination_service",
            "destination_namespace",
            "destination_workload",
            "upstream_cluster",
            "upstream_host",
            "method",
            "mtls",
            "reporter",
            "authority",
            "path",
            "route_name",
            "destination_subset",
        ];
        for (name, ids) in names.into_iter().zip(&mut self.columns) {
            self.catalog.column(&strings(batch, name)?, ids);
        }
        let [
            source_namespace,
            source_workload,
            destination_service,
            destination_namespace,
            destination_workload,
            upstream_cluster,
            upstream_host,
            method,
            mtls,
            reporter,
            authority,
            path,
            route_name,
            destination_subset,
        ] = &self.columns;

        for row in 0..batch.num_rows() {
            let server = inbound.is_valid(row) && inbound.value(row);
            let outbound = outbound.is_valid(row) && outbound.value(row);
            let flags = flags[row];
            let no_route = flags.contains(FailureFlags::NR);
            let status = status.is_valid(row).then(|| status.value(row));
            let duration_ms =
                duration_ms.is_valid(row).then(|| u32::try_from(duration_ms.value(row)).unwrap_or(u32::MAX));
            if outbound || no_route {
                let route = RouteIds {
                    reporter: reporter[row],
                    source_namespace: source_namespace[row],
                    source_workload: source_workload[row],
                    authority: authority[row],
                    path: path[row],
                    method: method[row],
                    route_name: route_name[row],
                    no_route,
                };
                let attribution = match self.routes.get(&route) {
                    Some(&code) => code,
                    None => {
                        let catalog = self.catalog.shared();
                        let s = |id| catalog.resolve(id);
                        let key = RouteKey {
                            reporter: s(route.reporter).unwrap_or(""),
                            source_namespace: s(route.source_namespace),
                            source_workload: s(route.source_workload),
                            authority: s(route.authority),
                            path: s(route.path),
                            method: s(route.method),
                            route_name: s(route.route_name),
                            no_route,
                        };
                        let code = attributor.code(&mut self.matcher, &key);
                        drop(catalog);
                        self.routes.insert(route, code);
                        code
                    }
                };
                let group = ClientGroup {
                    reporter: route.reporter,
                    outbound,
                    source_namespace: route.source_namespace,
                    source_workload: route.source_workload,
                    authority: route.authority,
                    path: route.path.filter(|_| lists_path(attribution)),
                    method: route.method,
                    destination_service: destination_service[row],
                    destination_subset: destination_subset[row],
                    status,
                    flags,
                    duration_ms,
                    attribution,
                };
                self.tallies.client(group, timestamp.value(row));
            }
            if !(server || outbound && destination_service[row].is_some()) {
                continue;
            }
            let source_address = match (server, source_workload[row]) {
                (true, None) => value(&remote_address, row).map(|a| self.catalog.string_id(without_port(a))),
                _ => None,
            };
            let attributes = Attributes {
                source_namespace: source_namespace[row],
                source_workload: source_workload[row],
                source_address,
                destination_service: destination_service[row],
                destination_namespace: destination_namespace[row],
                destination_workload: destination_workload[row],
                upstream_cluster: upstream_cluster[row].filter(|_| server),
                method: method[row].filter(|_| server),
            };
            let key = match (value(&request_id, row), attributes.destination_service) {
                (Some(id), Some(service)) => Some(self.key_hasher.key(id, service)),
                _ => None,
            };
            let mtls = mtls[row].map_or(Mtls::Unknown, |id| {
                *self.mtls.entry(id).or_insert_with(|| self.catalog.shared().string(id).parse().unwrap_or_default())
            });
            let record = Reduced {
                key: key.unwrap_or_default(),
                timestamp: timestamp.value(row),
                duration_ms,
                attempts: attempts.is_valid(row).then(|| u16::try_from(attempts.value(row)).unwrap_or(u16::MAX)),
                attributes: self.catalog.attributes_id(attributes),
                status,
                mtls,
                server,
            };
            if let Some(service) = attributes.destination_service {
                self.tallies.add(service, &record, upstream_host[row]);
            }
            match key {
                Some((high, _)) => self.shards[(high >> 56) as usize % SHARDS].push(record),
                None => self.groups.alone(&record),
            }
        }
        Ok(())
    }
}

/// A group of the pairing's output: requests of one edge with one observed mTLS and duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PairGroup {
    client: Option<u32>,
    server: Option<u32>,
    mtls: Mtls,
    duration_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PairCounts {
    requests: u64,
    resolved: u64,
    errors: u64,
}

/// The pass's results while ids are still interned: edges' requests by [`PairGroup`], and tries per request
/// by (server [`Attributes`], whose service and method name the group).
#[derive(Default)]
struct Groups {
    pairs: HashMap<PairGroup, PairCounts>,
    retries: HashMap<u32, Retries>,
}

impl Groups {
    fn count(&mut self, group: PairGroup, resolved: bool, failed: bool) {
        let counts = self.pairs.entry(group).or_default();
        counts.requests += 1;
        counts.resolved += u64::from(resolved);
        counts.errors += u64::from(failed);
    }

    /// A record without a partner.
    fn alone(&mut self, record: &Reduced) {
        let attributes = Some(record.attributes);
        let (client, server) = if record.server { (None, attributes) } else { (attributes, None) };
        let group = PairGroup { client, server, mtls: record.mtls, duration_ms: record.duration_ms.map(u64::from) };
        self.count(group, false, record.failed());
    }

    /// A server record and the client record of the same request.
    fn paired(&mut self, client: &Reduced, server: &Reduced) {
        let mtls = if server.mtls == Mtls::Unknown { client.mtls } else { server.mtls };
        let group = PairGroup {
            client: Some(client.attributes),
            server: Some(server.attributes),
            mtls,
            duration_ms: client.duration_ms.or(server.duration_ms).map(u64::from),
        };
        let resolved = client.mtls == Mtls::Unknown && server.mtls != Mtls::Unknown;
        self.count(group, resolved, client.failed());
    }

    fn tries(&mut self, server_attributes: u32, tries: u64) {
        let retries = self.retries.entry(server_attributes).or_default();
        retries.requests += 1;
        retries.retried += u64::from(tries > 1);
        retries.max_tries = retries.max_tries.max(tries);
    }

    fn merge(&mut self, other: Groups) {
        for (group, counts) in other.pairs {
            let into = self.pairs.entry(group).or_default();
            into.requests += counts.requests;
            into.resolved += counts.resolved;
            into.errors += counts.errors;
        }
        for (attributes, retries) in other.retries {
            add_retries(self.retries.entry(attributes).or_default(), &retries);
        }
    }

    /// The groups with their strings, merged by what the analyses tell apart, and the tallies.
    fn resolve(self, catalog: &Catalog, tallies: Tallies) -> Evidence {
        let mut edges: BTreeMap<EdgeKey, EdgeRow> = BTreeMap::new();
        for (group, counts) in self.pairs {
            let client = group.client.map(|id| catalog.attributes(id)).unwrap_or_default();
            let server = group.server.map(|id| catalog.attributes(id)).unwrap_or_default();
            let owned = |s: Option<&str>| s.map(str::to_owned);
            let key = EdgeKey {
                source_namespace: owned(client.source_namespace.or(server.source_namespace)),
                source_workload: owned(client.source_workload.or(server.source_workload)),
                source_address: if client.source_workload.is_none() { owned(server.source_address) } else { None },
                destination_service: owned(server.destination_service.or(client.destination_service)),
                destination_namespace: owned(server.destination_namespace.or(client.destination_namespace)),
                destination_workload: owned(server.destination_workload.or(client.destination_workload)),
                server_cluster: owned(server.upstream_cluster),
                mtls: group.mtls.as_str().to_owned(),
            };
            let edge = edges.entry(key.clone()).or_insert_with(|| EdgeRow::new(key));
            edge.add(counts.requests, counts.resolved, counts.errors, group.duration_ms);
        }

        let mut retries: BTreeMap<(String, Option<String>), Retries> = BTreeMap::new();
        for (id, counts) in self.retries {
            let attributes = catalog.attributes(id);
            let Some(service) = attributes.destination_service else { continue };
            add_retries(
                retries.entry((service.to_owned(), attributes.method.map(str::to_owned))).or_default(),
                &counts,
            );
        }
        let (server_latency, bursts, endpoints, client) = tallies.resolve(catalog);
        Evidence {
            pairs: edges.into_values().collect(),
            retries: retries
                .into_iter()
                .map(|((destination_service, method), retries)| RetryRow { destination_service, method, retries })
                .collect(),
            server_latency,
            bursts,
            endpoints,
            client,
        }
    }
}

/// Client-side requests alike in everything [`ClientRow`] tells apart, with interned strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ClientGroup {
    reporter: Option<StrId>,
    outbound: bool,
    source_namespace: Option<StrId>,
    source_workload: Option<StrId>,
    authority: Option<StrId>,
    path: Option<StrId>,
    method: Option<StrId>,
    destination_service: Option<StrId>,
    destination_subset: Option<StrId>,
    status: Option<u16>,
    flags: FailureFlags,
    duration_ms: Option<u32>,
    attribution: i32,
}

/// What single records tell, counted while the pass reads them: per destination service, and the
/// client-side requests by [`ClientGroup`].
#[derive(Default)]
struct Tallies {
    /// Server records by (service, duration ms): the server-side latency.
    server_durations: HashMap<(StrId, u64), u64>,
    /// Failed client calls by (service, bucket of [`BURST_SECONDS`] since the epoch).
    failures_per_bucket: HashMap<(StrId, i64), u64>,
    /// Client calls and their failures by (service, upstream host).
    endpoints: HashMap<(StrId, StrId), (u64, u64)>,
    /// Client-side requests and the latest one's timestamp (microseconds since the epoch) by group.
    clients: HashMap<ClientGroup, (u64, i64)>,
}

impl Tallies {
    /// Counts `record`, to `service`, that reached `upstream_host` if it says so.
    fn add(&mut self, service: StrId, record: &Reduced, upstream_host: Option<StrId>) {
        if record.server {
            if let Some(duration) = record.duration_ms {
                *self.server_durations.entry((service, u64::from(duration))).or_default() += 1;
            }
            return;
        }
        let failed = record.failed();
        if failed {
            let bucket = record.timestamp.div_euclid(i64::from(BURST_SECONDS) * 1_000_000);
            *self.failures_per_bucket.entry((service, bucket)).or_default() += 1;
        }
        if let Some(host) = upstream_host {
            let (calls, errors) = self.endpoints.entry((service, host)).or_default();
            *calls += 1;
            *errors += u64::from(failed);
        }
    }

    fn client(&mut self, group: ClientGroup, timestamp: i64) {
        let (requests, last_seen) = self.clients.entry(group).or_insert((0, timestamp));
        *requests += 1;
        *last_seen = (*last_seen).max(timestamp);
    }

    fn merge(&mut self, other: Tallies) {
        for (key, count) in other.server_durations {
            *self.server_durations.entry(key).or_default() += count;
        }
        for (key, count) in other.failures_per_bucket {
            *self.failures_per_bucket.entry(key).or_default() += count;
        }
        for (key, (calls, errors)) in other.endpoints {
            let into = self.endpoints.entry(key).or_default();
            into.0 += calls;
            into.1 += errors;
        }
        for (group, (requests, last_seen)) in other.clients {
            let into = self.clients.entry(group).or_insert((0, last_seen));
            into.0 += requests;
            into.1 = into.1.max(last_seen);
        }
    }

    fn resolve(self, catalog: &Catalog) -> (BTreeMap<String, Latency>, Vec<BurstRow>, Vec<EndpointRow>, ClientTraffic) {
        let mut histograms: BTreeMap<&str, Histogram> = BTreeMap::new();
        for ((service, duration), count) in self.server_durations {
            histograms.entry(catalog.string(service)).or_default().add(duration, count);
        }
        let latency =
            histograms.into_iter().filter_map(|(service, h)| Some((service.to_owned(), Latency::of(&h)?))).collect();

        let mut bursts: BTreeMap<&str, Bursts> = BTreeMap::new();
        for ((service, _), errors) in self.failures_per_bucket {
            if errors >= BURST_MIN_ERRORS {
                let service = bursts.entry(catalog.string(service)).or_default();
                service.windows += 1;
                service.worst = service.worst.max(errors);
            }
        }
        let bursts = bursts
            .into_iter()
            .map(|(service, bursts)| BurstRow { destination_service: service.to_owned(), bursts })
            .collect();

        let mut endpoints: Vec<EndpointRow> = self
            .endpoints
            .into_iter()
            .map(|((service, _), (requests, errors))| EndpointRow {
                destination_service: catalog.string(service).to_owned(),
                requests,
                errors,
            })
            .collect();
        endpoints.sort_by(|a, b| {
            (&a.destination_service, a.requests, a.errors).cmp(&(&b.destination_service, b.requests, b.errors))
        });
        let s = |id| catalog.resolve(id);
        let client = self
            .clients
            .iter()
            .map(|(group, &(requests, last_seen))| ClientRow {
                reporter: s(group.reporter).unwrap_or(""),
                outbound: group.outbound,
                source_namespace: s(group.source_namespace),
                source_workload: s(group.source_workload),
                authority: s(group.authority),
                path: s(group.path),
                method: s(group.method),
                destination_service: s(group.destination_service),
                destination_subset: s(group.destination_subset),
                status: group.status,
                flags: group.flags,
                duration_ms: group.duration_ms.map(u64::from),
                attribution: group.attribution,
                requests,
                last_seen: DateTime::from_timestamp_micros(last_seen).unwrap_or_default(),
            })
            .collect();
        (latency, bursts, endpoints, client)
    }
}

fn add_retries(into: &mut Retries, other: &Retries) {
    into.requests += other.requests;
    into.retried += other.retried;
    into.max_tries = into.max_tries.max(other.max_tries);
}

/// Scratch space for pairing the records of one key, reused from key to key.
#[derive(Default)]
struct RunBuffers {
    clients: Vec<usize>,
    servers: Vec<usize>,
    /// Per client record, the tries paired with it, if any.
    calls: Vec<Option<Tries>>,
    /// Without client records: the server records' tries by method.
    methods: Vec<Tries>,
}

/// Server records counted as tries of one request.
#[derive(Clone, Copy)]
struct Tries {
    /// Attributes of the first try: its service and method name the request.
    attributes: u32,
    logged: u64,
    /// Most attempts one try reported.
    attempts: u64,
}

impl Tries {
    fn new(server: &Reduced) -> Tries {
        Tries { attributes: server.attributes, logged: 0, attempts: 0 }
    }

    fn add(&mut self, server: &Reduced) {
        self.logged += 1;
        self.attempts = self.attempts.max(u64::from(server.attempts.unwrap_or(1)));
    }

    fn count(&self, groups: &mut Groups) {
        groups.tries(self.attributes, self.logged.max(self.attempts));
    }
}

impl RunBuffers {
    /// Pairs `records`, which share a key and are in time order, and counts their tries.
    fn pair(&mut self, records: &[Reduced], catalog: &Catalog, groups: &mut Groups) {
        self.clients.clear();
        self.servers.clear();
        for (index, record) in records.iter().enumerate() {
            if record.server { &mut self.servers } else { &mut self.clients }.push(index);
        }
        if self.clients.is_empty() {
            // Only the destination logged: the tries of one request per method.
            self.methods.clear();
            for &s in &self.servers {
                let server = &records[s];
                groups.alone(server);
                let method = catalog.method(server.attributes);
                let known = self.methods.iter().position(|t| catalog.method(t.attributes) == method);
                let index = known.unwrap_or_else(|| {
                    self.methods.push(Tries::new(server));
                    self.methods.len() - 1
                });
                self.methods[index].add(server);
            }
            self.methods.iter().for_each(|tries| tries.count(groups));
            return;
        }

        self.calls.clear();
        self.calls.resize(self.clients.len(), None);
        let mut latest = 0;
        for &s in &self.servers {
            let server = &records[s];
            while latest + 1 < self.clients.len() && records[self.clients[latest + 1]].timestamp <= server.timestamp {
                latest += 1;
            }
            groups.paired(&records[self.clients[latest]], server);
            self.calls[latest].get_or_insert_with(|| Tries::new(server)).add(server);
        }
        for (&c, call) in self.clients.iter().zip(&self.calls) {
            match call {
                Some(tries) => tries.count(groups),
                None => groups.alone(&records[c]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_port;

    #[test]
    fn ports_are_stripped_like_the_sql_regexp() {
        for (address, host) in [
            ("10.244.9.7:51234", "10.244.9.7"),
            ("10.244.9.7", "10.244.9.7"),
            ("[::1]:8080", "[::1]"),
            ("::1", ":"),
            ("host:", "host:"),
            ("host:80a", "host:80a"),
            ("", ""),
        ] {
            assert_eq!(without_port(address), host, "{address}");
        }
    }
}

//! A strict fake of Lunch Money's API (v1 and v2), served from inside the test process on
//! `127.0.0.1:0`, for end-to-end tests of the delivery worker.
//!
//! "Strict" means it rejects what the real API rejects, with the same status codes and body
//! shapes (sources: `shared/reference/lunch-money-api.md`, and the insert schema of the official
//! v2 OpenAPI spec, `@lunch-money/v2-api-spec@2.11.0-preview.4`). Where the real behaviour is not
//! documented, the fake takes the stricter reading, so that a client that passes here is safe
//! against the real API. Those choices:
//!
//! - v2 `payee` over 140 characters and `notes` over 350 are rejected (the v1 limits; the v2 spec
//!   gives no limit and its history says v2.9.2/v2.9.4 *raised* them, so the real limits are at
//!   least these). Change with [`FakeBuilder::text_limits`].
//! - The same `external_id` twice in one request is a 400 whatever the accounts.
//! - `external_id` together with `plaid_account_id` is rejected (the spec: external ids "cannot
//!   be added" to transactions of synced accounts).
//! - Dedupe by `external_id` happens only when a manual account is set (`manual_account_id`, or
//!   `asset_id` in v1), across v1 and v2; cash transactions are never deduplicated by it, so a
//!   client must not rely on it for them. `skip_duplicates` compares against transactions stored
//!   before the request, not against earlier ones in the same request.
//! - v1 rejects unknown keys too (the real v1 ignores them, which would silently turn a v2-style
//!   `manual_account_id` sent to v1 into a cash transaction).
//! - Requests with a body must say `Content-Type: application/json`.
//!
//! It is written on plain `std::net`, one thread per connection, with a small HTTP/1.1 reader
//! (request line, headers, `Content-Length` or chunked body, keep-alive), so that faults below
//! HTTP framing are possible: "cut" stores the batch and then closes the socket without a response.
//! It needs no async runtime and works from `#[test]` and any Tokio flavour.
//!
//! ```ignore
//! let fake = FakeLunchMoney::start();                 // standard seed, see `seed`
//! // point the client at fake.base_url() with token seed::TOKEN ...
//! fake.fail_next_inserts(2);
//! let stored = fake.wait_for_transactions(3, Duration::from_secs(5)).await;
//! assert_eq!(fake.request_count("POST /v2/transactions"), 3);
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The standard seed data of [`FakeLunchMoney::seeded`] and [`FakeLunchMoney::start`].
pub mod seed {
    /// The API token the seeded fake accepts.
    pub const TOKEN: &str = "fake-lunchmoney-token-0123456789";
    /// Manual account "Checking" (usd).
    pub const CHECKING: i64 = 1001;
    /// Manual account "Venmo" (usd).
    pub const VENMO: i64 = 1002;
    /// Manual account "Wise EUR" (eur).
    pub const WISE_EUR: i64 = 1003;
    /// Plaid (synced) account "Chase Sapphire" (usd).
    pub const PLAID_CARD: i64 = 2001;
    /// Category "Groceries" (no group).
    pub const GROCERIES: i64 = 3001;
    /// Category "Salary" (income, no group).
    pub const SALARY: i64 = 3002;
    /// Category group "Food & Drink": not usable on a transaction.
    pub const FOOD_GROUP: i64 = 3100;
    /// Category "Restaurants", in [`FOOD_GROUP`].
    pub const RESTAURANTS: i64 = 3101;
    /// Tag "venmo".
    pub const TAG_VENMO: i64 = 4001;
    /// Tag "reimbursable".
    pub const TAG_REIMBURSABLE: i64 = 4002;
    /// A recurring item.
    pub const RECURRING: i64 = 5001;
}

/// Currencies the v2 spec's `currencyEnum` lists (167 codes, lowercase).
pub const CURRENCIES: &[&str] = &[
    "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd", "bdt",
    "bgn", "bhd", "bif", "bmd", "bnd", "bob", "brl", "bsd", "btc", "btn", "bwp", "byn", "bzd",
    "cad", "cdf", "chf", "clf", "clp", "cny", "cop", "crc", "cuc", "cup", "cve", "czk", "djf",
    "dkk", "dop", "dzd", "egp", "ern", "etb", "eth", "eur", "fjd", "fkp", "gbp", "gel", "ggp",
    "ghs", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl", "hrk", "htg", "huf", "idr", "ils",
    "imp", "inr", "iqd", "irr", "isk", "jep", "jmd", "jod", "jpy", "kes", "kgs", "khr", "kmf",
    "kpw", "krw", "kwd", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "ltl", "lvl", "lyd",
    "mad", "mdl", "mga", "mkd", "mmk", "mnt", "mop", "mro", "mur", "mvr", "mwk", "mxn", "myr",
    "mzn", "nad", "ngn", "nio", "nok", "npr", "nzd", "omr", "pab", "pen", "pgk", "php", "pkr",
    "pln", "pyg", "qar", "ron", "rsd", "rub", "rwf", "sar", "sbd", "scr", "sdg", "sek", "sgd",
    "shp", "sll", "sos", "srd", "std", "svc", "syp", "szl", "thb", "tjs", "tmt", "tnd", "top",
    "try", "ttd", "twd", "tzs", "uah", "ugx", "usd", "uyu", "uzs", "vef", "ves", "vnd", "vuv",
    "wst", "xaf", "xag", "xau", "xcd", "xof", "xpf", "yer", "zar", "zmw", "zwl",
];

/// At most this many transactions in one insert (v1 and v2).
pub const MAX_BATCH: usize = 500;
/// `external_id` limit, in characters (v1 and v2).
pub const MAX_EXTERNAL_ID: usize = 75;
/// `custom_metadata` limit, in characters of its JSON text (v2).
pub const MAX_CUSTOM_METADATA: usize = 4096;
/// v1 `payee` limit (also the fake's default for v2).
pub const V1_MAX_PAYEE: usize = 140;
/// v1 `notes` limit (also the fake's default for v2).
pub const V1_MAX_NOTES: usize = 350;

const V2_BODY_KEYS: &[&str] = &[
    "transactions",
    "apply_rules",
    "skip_duplicates",
    "skip_balance_update",
];
const V2_TX_KEYS: &[&str] = &[
    "date",
    "amount",
    "currency",
    "payee",
    "original_name",
    "category_id",
    "notes",
    "manual_account_id",
    "plaid_account_id",
    "recurring_id",
    "status",
    "tag_ids",
    "external_id",
    "custom_metadata",
];
/// `PUT /v2/transactions/{id}`: properties that change something.
const V2_UPDATE_KEYS: &[&str] = &[
    "date",
    "amount",
    "currency",
    "recurring_id",
    "payee",
    "category_id",
    "notes",
    "manual_account_id",
    "plaid_account_id",
    "tag_ids",
    "additional_tag_ids",
    "external_id",
    "custom_metadata",
    "status",
];
/// `PUT /v2/transactions/{id}`: system properties the spec tolerates and ignores.
const V2_UPDATE_IGNORED: &[&str] = &[
    "id",
    "original_name",
    "to_base",
    "is_pending",
    "plaid_metadata",
    "created_at",
    "updated_at",
    "is_split_parent",
    "children",
    "split_parent_id",
    "is_group_parent",
    "group_parent_id",
    "source",
];
const V2_ACCOUNT_UPDATE_KEYS: &[&str] = &[
    "name",
    "institution_name",
    "display_name",
    "type",
    "subtype",
    "balance",
    "currency",
    "balance_as_of",
    "status",
    "closed_on",
    "external_id",
    "custom_metadata",
    "exclude_from_transactions",
];
const V2_ACCOUNT_UPDATE_IGNORED: &[&str] = &[
    "id",
    "to_base",
    "created_at",
    "updated_at",
    "created_by_name",
];
const ACCOUNT_TYPES: &[&str] = &[
    "cash",
    "credit",
    "cryptocurrency",
    "employee compensation",
    "investment",
    "loan",
    "other liability",
    "other asset",
    "real estate",
    "vehicle",
];
const V2_TAG_KEYS: &[&str] = &[
    "name",
    "description",
    "text_color",
    "background_color",
    "archived",
];
const V1_BODY_KEYS: &[&str] = &[
    "transactions",
    "apply_rules",
    "skip_duplicates",
    "check_for_recurring",
    "debit_as_negative",
    "skip_balance_update",
];
const V1_TX_KEYS: &[&str] = &[
    "date",
    "amount",
    "currency",
    "payee",
    "notes",
    "asset_id",
    "plaid_account_id",
    "category_id",
    "recurring_id",
    "status",
    "external_id",
    "tags",
];
const V1_ASSET_KEYS: &[&str] = &[
    "type_name",
    "subtype_name",
    "name",
    "display_name",
    "balance",
    "balance_as_of",
    "currency",
    "institution_name",
    "closed_on",
    "exclude_transactions",
];

// ---------------------------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------------------------

/// Which API stored a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    V1,
    V2,
}

/// The body flags of the insert that stored a transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertFlags {
    pub apply_rules: bool,
    pub skip_duplicates: bool,
    pub skip_balance_update: bool,
    /// v1 only.
    pub check_for_recurring: bool,
    /// v1 only.
    pub debit_as_negative: bool,
}

/// A transaction the fake stored.
#[derive(Clone, Debug)]
pub struct StoredTransaction {
    pub id: i64,
    pub api: Api,
    /// The [`RecordedRequest::seq`] of the insert that stored it.
    pub request_seq: u64,
    /// Its index in that request's `transactions`.
    pub request_index: usize,
    pub date: String,
    /// The amount exactly as sent: a string's contents, or a number's JSON text.
    pub amount: String,
    /// The amount's JSON value as sent (string or number).
    pub amount_json: Value,
    /// The amount in v2's convention, 4 decimals: **positive = debit (money out)**. For v1 with
    /// `debit_as_negative: true` this is the sent amount negated.
    pub debit_amount: String,
    /// Effective currency (the user's primary currency when none was sent).
    pub currency: String,
    pub payee: Option<String>,
    pub original_name: Option<String>,
    pub notes: Option<String>,
    /// v2 `manual_account_id`, or v1 `asset_id`.
    pub manual_account_id: Option<i64>,
    pub plaid_account_id: Option<i64>,
    pub category_id: Option<i64>,
    pub recurring_id: Option<i64>,
    pub tag_ids: Vec<i64>,
    /// As sent, or the default (`unreviewed` in v2, `uncleared` in v1).
    pub status: String,
    pub external_id: Option<String>,
    pub custom_metadata: Option<Value>,
    pub flags: InsertFlags,
    /// The transaction object exactly as sent.
    pub raw: Value,
    pub created_at: String,
}

/// A manual account (v1: asset).
#[derive(Clone, Debug)]
pub struct ManualAccount {
    pub id: i64,
    pub name: String,
    pub currency: String,
    /// 4 decimals.
    pub balance: String,
    pub balance_as_of: String,
    pub account_type: String,
    pub raw_updates: Vec<Value>,
}

/// A synced (Plaid) account.
#[derive(Clone, Debug)]
pub struct PlaidAccount {
    pub id: i64,
    pub name: String,
    pub currency: String,
}

/// A category or category group.
#[derive(Clone, Debug)]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub is_group: bool,
    pub group_id: Option<i64>,
    pub is_income: bool,
}

/// A tag.
#[derive(Clone, Debug)]
pub struct Tag {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being handled.
    Pending,
    /// Answered with this status.
    Status(u16),
    /// The connection was closed without an answer (after storing the batch).
    Cut,
}

/// One request, as received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// 1, 2, 3, ... in arrival order.
    pub seq: u64,
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// `"POST /v2/transactions"`, `"PUT /v2/transactions/{id}"`, ...
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    pub outcome: Outcome,
}

impl RecordedRequest {
    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// A request the fake refused: every 4xx/5xx answer, and v1's 200-with-`error` answers.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub seq: u64,
    pub endpoint: String,
    pub status: u16,
    /// Why, in one line (the error messages joined with "; ").
    pub reason: String,
    /// The response body sent.
    pub response: Value,
}

/// Injected faults. Counters ("next N") are consumed as they fire.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Answer the next N inserts (`POST /v1|v2/transactions`) with 500, storing nothing.
    pub fail_next_inserts: u32,
    /// Answer each insert with 500 with this probability (seeded RNG).
    pub insert_failure_rate: f64,
    /// Answer the next N requests (any endpoint) with 429 and `Retry-After`.
    pub throttle_next: u32,
    /// The `Retry-After` seconds of `throttle_next`.
    pub throttle_retry_after_secs: u64,
    /// Admit at most R requests per rolling window (shared by v1 and v2); 429 + `Retry-After`
    /// beyond. `None`: off.
    pub rate_limit: Option<u32>,
    /// The rolling window of `rate_limit`: a minute, as the real API.
    pub rate_limit_window: Duration,
    /// Store the next N insert batches, then close the connection without answering.
    pub cut_next_inserts: u32,
    /// Same, with this probability per insert (seeded RNG).
    pub cut_rate: f64,
    /// Wait this long before handling each request.
    pub delay: Duration,
    /// Wait [`Faults::slow_delay`] (on top of `delay`) before handling a request, with this
    /// probability per request (seeded RNG): latency that comes and goes.
    pub slow_rate: f64,
    /// How long a request picked by `slow_rate` waits.
    pub slow_delay: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_next_inserts: 0,
            insert_failure_rate: 0.0,
            throttle_next: 0,
            throttle_retry_after_secs: 30,
            rate_limit: None,
            rate_limit_window: Duration::from_secs(60),
            cut_next_inserts: 0,
            cut_rate: 0.0,
            delay: Duration::ZERO,
            slow_rate: 0.0,
            slow_delay: Duration::from_millis(500),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Entry points.
pub struct FakeLunchMoney;

impl FakeLunchMoney {
    /// An empty fake: token [`seed::TOKEN`], primary currency usd, no accounts, categories or tags.
    pub fn builder() -> FakeBuilder {
        FakeBuilder {
            token: seed::TOKEN.to_string(),
            primary_currency: "usd".into(),
            manual_accounts: Vec::new(),
            plaid_accounts: Vec::new(),
            categories: Vec::new(),
            tags: Vec::new(),
            recurring: Vec::new(),
            payee_limit: Some(V1_MAX_PAYEE),
            notes_limit: Some(V1_MAX_NOTES),
            plaid_cooldown: Duration::from_secs(60),
            rng_seed: 0x5EED_1234_ABCD_0001,
            faults: Faults::default(),
        }
    }

    /// A builder with the standard seed data (the ids in [`seed`]).
    pub fn seeded() -> FakeBuilder {
        Self::builder()
            .manual_account(seed::CHECKING, "Checking", "usd")
            .manual_account(seed::VENMO, "Venmo", "usd")
            .manual_account(seed::WISE_EUR, "Wise EUR", "eur")
            .plaid_account(seed::PLAID_CARD, "Chase Sapphire", "usd")
            .category(seed::GROCERIES, "Groceries")
            .income_category(seed::SALARY, "Salary")
            .category_group(seed::FOOD_GROUP, "Food & Drink")
            .category_in_group(seed::RESTAURANTS, "Restaurants", seed::FOOD_GROUP)
            .tag(seed::TAG_VENMO, "venmo")
            .tag(seed::TAG_REIMBURSABLE, "reimbursable")
            .recurring_item(seed::RECURRING)
    }

    /// The seeded fake, started.
    pub fn start() -> FakeHandle {
        Self::seeded().start()
    }
}

/// Configures a fake before it starts.
pub struct FakeBuilder {
    token: String,
    primary_currency: String,
    manual_accounts: Vec<ManualAccount>,
    plaid_accounts: Vec<PlaidAccount>,
    categories: Vec<Category>,
    tags: Vec<Tag>,
    recurring: Vec<i64>,
    payee_limit: Option<usize>,
    notes_limit: Option<usize>,
    plaid_cooldown: Duration,
    rng_seed: u64,
    faults: Faults,
}

impl FakeBuilder {
    pub fn token(mut self, token: &str) -> Self {
        self.token = token.to_string();
        self
    }

    /// The currency of transactions sent without one.
    pub fn primary_currency(mut self, currency: &str) -> Self {
        self.primary_currency = currency.to_string();
        self
    }

    pub fn manual_account(mut self, id: i64, name: &str, currency: &str) -> Self {
        self.manual_accounts.push(ManualAccount {
            id,
            name: name.to_string(),
            currency: currency.to_string(),
            balance: "0.0000".into(),
            balance_as_of: now_rfc3339(),
            account_type: "cash".into(),
            raw_updates: Vec::new(),
        });
        self
    }

    pub fn plaid_account(mut self, id: i64, name: &str, currency: &str) -> Self {
        self.plaid_accounts.push(PlaidAccount {
            id,
            name: name.to_string(),
            currency: currency.to_string(),
        });
        self
    }

    pub fn category(self, id: i64, name: &str) -> Self {
        self.push_category(id, name, false, None, false)
    }

    pub fn income_category(self, id: i64, name: &str) -> Self {
        self.push_category(id, name, false, None, true)
    }

    /// A category group: transactions may not use it.
    pub fn category_group(self, id: i64, name: &str) -> Self {
        self.push_category(id, name, true, None, false)
    }

    pub fn category_in_group(self, id: i64, name: &str, group_id: i64) -> Self {
        self.push_category(id, name, false, Some(group_id), false)
    }

    fn push_category(
        mut self,
        id: i64,
        name: &str,
        is_group: bool,
        group_id: Option<i64>,
        is_income: bool,
    ) -> Self {
        self.categories.push(Category {
            id,
            name: name.to_string(),
            is_group,
            group_id,
            is_income,
        });
        self
    }

    pub fn tag(mut self, id: i64, name: &str) -> Self {
        self.tags.push(Tag {
            id,
            name: name.to_string(),
            description: None,
        });
        self
    }

    pub fn recurring_item(mut self, id: i64) -> Self {
        self.recurring.push(id);
        self
    }

    /// v2 `payee` and `notes` limits in characters (`None`: unlimited). Default 140 and 350.
    pub fn text_limits(mut self, payee: Option<usize>, notes: Option<usize>) -> Self {
        self.payee_limit = payee;
        self.notes_limit = notes;
        self
    }

    /// How long a Plaid account stays ineligible after a fetch (default a minute).
    pub fn plaid_fetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.plaid_cooldown = cooldown;
        self
    }

    /// Seed of the fault RNG (same seed, same sequence of random faults).
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Replaces all faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    pub fn fail_next_inserts(mut self, n: u32) -> Self {
        self.faults.fail_next_inserts = n;
        self
    }

    pub fn insert_failure_rate(mut self, p: f64) -> Self {
        self.faults.insert_failure_rate = p;
        self
    }

    pub fn throttle_next(mut self, n: u32, retry_after_secs: u64) -> Self {
        self.faults.throttle_next = n;
        self.faults.throttle_retry_after_secs = retry_after_secs;
        self
    }

    pub fn rate_limit(mut self, per_window: u32) -> Self {
        self.faults.rate_limit = Some(per_window);
        self
    }

    pub fn rate_limit_window(mut self, window: Duration) -> Self {
        self.faults.rate_limit_window = window;
        self
    }

    pub fn cut_next_inserts(mut self, n: u32) -> Self {
        self.faults.cut_next_inserts = n;
        self
    }

    pub fn cut_rate(mut self, p: f64) -> Self {
        self.faults.cut_rate = p;
        self
    }

    pub fn slow(mut self, rate: f64, delay: Duration) -> Self {
        self.faults.slow_rate = rate;
        self.faults.slow_delay = delay;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.faults.delay = delay;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start(self) -> FakeHandle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let next_tag_id = self
            .tags
            .iter()
            .map(|t| t.id)
            .max()
            .unwrap_or(0)
            .max(49_999)
            + 1;
        let state = State {
            token: self.token,
            primary_currency: self.primary_currency,
            manual_accounts: self.manual_accounts,
            plaid_accounts: self.plaid_accounts,
            categories: self.categories,
            tags: self.tags,
            recurring: self.recurring,
            payee_limit: self.payee_limit,
            notes_limit: self.notes_limit,
            plaid_cooldown: self.plaid_cooldown,
            plaid_fetched: HashMap::new(),
            transactions: Vec::new(),
            next_txn_id: 900_000_001,
            next_tag_id,
            faults: self.faults,
            rng: XorShift::new(self.rng_seed),
            hits: VecDeque::new(),
            log: Vec::new(),
            next_seq: 1,
            counts: BTreeMap::new(),
            rejections: Vec::new(),
            injected: BTreeMap::new(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fake-lunchmoney-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn accept thread");
        FakeHandle {
            addr,
            shared,
            accept: Some(accept),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handle
// ---------------------------------------------------------------------------------------------

/// A running fake. Dropping it stops the server: no new connections, open ones are closed, and
/// every thread is joined.
pub struct FakeHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeHandle {
    /// `http://127.0.0.1:PORT`: the equivalent of `https://api.lunchmoney.dev` and
    /// `https://dev.lunchmoney.app` (paths start with `/v2/` and `/v1/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> String {
        self.state().token.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    // --- inspection ----------------------------------------------------------------------

    /// Every stored transaction, in insertion order.
    pub fn transactions(&self) -> Vec<StoredTransaction> {
        self.state().transactions.clone()
    }

    /// The stored transactions of one manual account.
    pub fn transactions_in(&self, manual_account_id: i64) -> Vec<StoredTransaction> {
        self.state()
            .transactions
            .iter()
            .filter(|t| t.manual_account_id == Some(manual_account_id))
            .cloned()
            .collect()
    }

    /// The stored transaction with this external id (the first, if several accounts have it).
    pub fn transaction_by_external_id(&self, external_id: &str) -> Option<StoredTransaction> {
        self.state()
            .transactions
            .iter()
            .find(|t| t.external_id.as_deref() == Some(external_id))
            .cloned()
    }

    /// Every request received, in arrival order, with its body and outcome.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().log.clone()
    }

    /// The requests to one endpoint, e.g. `"POST /v2/transactions"`.
    pub fn requests_to(&self, endpoint: &str) -> Vec<RecordedRequest> {
        self.state()
            .log
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// How many requests reached this endpoint (all of them: refused ones too).
    pub fn request_count(&self, endpoint: &str) -> usize {
        self.state().counts.get(endpoint).copied().unwrap_or(0)
    }

    /// Requests by endpoint.
    pub fn request_counts(&self) -> BTreeMap<String, usize> {
        self.state().counts.clone()
    }

    /// Every refused request with its reason.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.state().rejections.clone()
    }

    pub fn tags(&self) -> Vec<Tag> {
        self.state().tags.clone()
    }

    pub fn manual_accounts(&self) -> Vec<ManualAccount> {
        self.state().manual_accounts.clone()
    }

    pub fn manual_account(&self, id: i64) -> Option<ManualAccount> {
        self.state()
            .manual_accounts
            .iter()
            .find(|a| a.id == id)
            .cloned()
    }

    /// Forgets the request log, the counts and the rejections (stored data stays).
    pub fn clear_log(&self) {
        let mut st = self.state();
        st.log.clear();
        st.counts.clear();
        st.rejections.clear();
    }

    /// Waits (async) until at least `n` transactions are stored; panics after `timeout` with
    /// what the fake saw.
    pub async fn wait_for_transactions(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<StoredTransaction> {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = self.transactions();
            if stored.len() >= n {
                return stored;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fake Lunch Money: waited {timeout:?} for {n} transactions, have {}; requests: {:?}; rejections: {:?}",
                    stored.len(),
                    self.request_counts(),
                    self.rejections().iter().map(|r| &r.reason).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (async) until `cond` holds; false after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&FakeHandle) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // --- faults --------------------------------------------------------------------------

    /// The current faults (counters as remaining).
    pub fn faults(&self) -> Faults {
        self.state().faults.clone()
    }

    /// Changes the faults while running.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.state().faults);
    }

    /// Back to no faults (the rate limit too).
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.faults = Faults::default();
        st.hits.clear();
    }

    pub fn fail_next_inserts(&self, n: u32) {
        self.update_faults(|f| f.fail_next_inserts = n);
    }

    pub fn set_insert_failure_rate(&self, p: f64) {
        self.update_faults(|f| f.insert_failure_rate = p);
    }

    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        self.update_faults(|f| {
            f.throttle_next = n;
            f.throttle_retry_after_secs = retry_after_secs;
        });
    }

    /// `Some(R)`: at most R requests per window; `None`: off.
    pub fn set_rate_limit(&self, per_window: Option<u32>) {
        self.update_faults(|f| f.rate_limit = per_window);
    }

    pub fn set_rate_limit_window(&self, window: Duration) {
        self.update_faults(|f| f.rate_limit_window = window);
    }

    pub fn cut_next_inserts(&self, n: u32) {
        self.update_faults(|f| f.cut_next_inserts = n);
    }

    pub fn set_cut_rate(&self, p: f64) {
        self.update_faults(|f| f.cut_rate = p);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.update_faults(|f| f.delay = delay);
    }

    pub fn set_slow(&self, rate: f64, delay: Duration) {
        self.update_faults(|f| {
            f.slow_rate = rate;
            f.slow_delay = delay;
        });
    }

    /// How many times each injected fault fired: `"500"`, `"429"`, `"cut"`, `"slow"`.
    pub fn injected_faults(&self) -> BTreeMap<&'static str, usize> {
        self.state().injected.clone()
    }

    /// Refusals that were not injected faults: requests that broke the API's rules.
    pub fn violations(&self) -> Vec<Rejection> {
        self.state()
            .rejections
            .iter()
            .filter(|r| !r.reason.starts_with(INJECTED))
            .cloned()
            .collect()
    }

    /// Stops the server now (the same as dropping the handle).
    pub fn shutdown(self) {}
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for (_, stream) in lock(&self.shared.conns).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let workers: Vec<_> = lock(&self.shared.workers).drain(..).collect();
        for worker in workers {
            let _ = worker.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server internals
// ---------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    conns: Mutex<Vec<(u64, TcpStream)>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    next_conn: AtomicU64,
}

struct State {
    token: String,
    primary_currency: String,
    manual_accounts: Vec<ManualAccount>,
    plaid_accounts: Vec<PlaidAccount>,
    categories: Vec<Category>,
    tags: Vec<Tag>,
    recurring: Vec<i64>,
    payee_limit: Option<usize>,
    notes_limit: Option<usize>,
    plaid_cooldown: Duration,
    plaid_fetched: HashMap<i64, Instant>,
    transactions: Vec<StoredTransaction>,
    next_txn_id: i64,
    next_tag_id: i64,
    faults: Faults,
    rng: XorShift,
    /// Admission times inside the rate-limit window.
    hits: VecDeque<Instant>,
    log: Vec<RecordedRequest>,
    next_seq: u64,
    counts: BTreeMap<String, usize>,
    rejections: Vec<Rejection>,
    injected: BTreeMap<&'static str, usize>,
}

/// How the reason of every injected fault's refusal starts.
const INJECTED: &str = "injected ";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64: tiny, seeded, good enough for fault injection.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.conns).push((id, clone));
        }
        let worker_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fake-lunchmoney-conn".into())
            .spawn(move || {
                serve_connection(&worker_shared, stream);
                lock(&worker_shared.conns).retain(|(c, _)| *c != id);
            });
        if let Ok(handle) = spawned {
            let mut workers = lock(&shared.workers);
            workers.retain(|h| !h.is_finished());
            workers.push(handle);
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_string())
        })
    }

    fn wants_close(&self) -> bool {
        let conn = self.header("connection").map(|v| v.to_ascii_lowercase());
        match conn.as_deref() {
            Some(v) if v.contains("close") => true,
            Some(v) if v.contains("keep-alive") => false,
            _ => self.version == "HTTP/1.0",
        }
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

const MAX_HEAD: u64 = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader.by_ref().take(MAX_HEAD).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    Ok(Some(
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string(),
    ))
}

/// Reads one request; `Ok(None)` on a clean EOF between requests.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let request_line = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut parts = request_line.split(' ');
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let target = parts.next().ok_or_else(|| bad("no target"))?.to_string();
    let version = parts.next().ok_or_else(|| bad("no version"))?.to_string();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| bad("EOF in headers"))?;
        if line.is_empty() {
            break;
        }
        if headers.len() > 200 {
            return Err(bad("too many headers"));
        }
        let (k, v) = line.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let chunked = header_in(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let size_line = read_line(reader)?.ok_or_else(|| bad("EOF in chunk size"))?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while let Some(line) = read_line(reader)? {
                    if line.is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
        body
    } else if let Some(len) = header_in(&headers, "content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    } else {
        Vec::new()
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        version,
        headers,
        body,
    }))
}

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
    cut: bool,
    /// Set when the request was refused.
    reason: Option<String>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
            cut: false,
            reason: None,
        }
    }

    fn empty(status: u16) -> Self {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
            cut: false,
            reason: None,
        }
    }

    fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn refused(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        425 => "Too Early",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn write_reply(stream: &mut TcpStream, reply: &Reply, close: bool) -> io::Result<()> {
    let body = reply
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).expect("serialize"))
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        reply.status,
        reason_phrase(reply.status)
    );
    if reply.body.is_some() {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    // RFC 9110: a 204 carries no Content-Length.
    if reply.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    stream.write_all(&out)?;
    stream.flush()
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let reply = Reply::json(
                        400,
                        json!({"message": "Bad Request", "errors": [{"errMsg": format!("Malformed HTTP request: {e}")}]}),
                    );
                    let _ = write_reply(&mut stream, &reply, true);
                }
                break;
            }
        };
        let seq = record_request(shared, &req);
        let delay = {
            let mut st = lock(&shared.state);
            let (rate, slow) = (st.faults.slow_rate, st.faults.slow_delay);
            if st.rng.chance(rate) {
                *st.injected.entry("slow").or_default() += 1;
                st.faults.delay + slow
            } else {
                st.faults.delay
            }
        };
        if !sleep_unless_stopped(shared, delay) {
            break;
        }
        let reply = {
            let mut st = lock(&shared.state);
            let reply = st.handle(seq, &req);
            st.finish(seq, &reply);
            reply
        };
        if reply.cut {
            let _ = stream.shutdown(Shutdown::Both);
            break;
        }
        let close = req.wants_close();
        if write_reply(&mut stream, &reply, close).is_err() || close {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn sleep_unless_stopped(shared: &Shared, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

fn record_request(shared: &Shared, req: &Request) -> u64 {
    let mut st = lock(&shared.state);
    let seq = st.next_seq;
    st.next_seq += 1;
    let endpoint = endpoint_name(&req.method, &req.path);
    *st.counts.entry(endpoint.clone()).or_default() += 1;
    st.log.push(RecordedRequest {
        seq,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        endpoint,
        headers: req.headers.clone(),
        body: String::from_utf8_lossy(&req.body).into_owned(),
        outcome: Outcome::Pending,
    });
    seq
}

/// `"PUT /v2/transactions/{id}"` for `PUT /v2/transactions/123`.
fn endpoint_name(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let normalized: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| if i >= 3 && *s != "fetch" { "{id}" } else { s })
        .collect();
    format!("{method} {}", normalized.join("/"))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON integer (not `1.0`).
fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// The value as it would be shown in a message: a string's contents, else its JSON text.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn valid_date(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// `^-?\d+(\.\d{1,4})?$`
fn amount_pattern(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    !int.is_empty()
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| (1..=4).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()))
}

/// Ten-thousandths of an amount that is a pattern string or a finite JSON number.
fn amount_units(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) if amount_pattern(s) => {
            let neg = s.starts_with('-');
            let digits = s.trim_start_matches('-');
            let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
            let int: i128 = int.parse().ok()?;
            let frac: i128 = format!("{frac:0<4}").parse().ok()?;
            let units = int.checked_mul(10_000)?.checked_add(frac)?;
            Some(if neg { -units } else { units })
        }
        Value::Number(n) => {
            let f = n.as_f64()?;
            (f.is_finite() && f.abs() < 1e15).then(|| (f * 10_000.0).round() as i128)
        }
        _ => None,
    }
}

fn format_units(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

fn v2_error(status: u16, message: &str, errors: Vec<Value>) -> Reply {
    let reason = errors
        .iter()
        .filter_map(|e| e.get("errMsg").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("; ");
    Reply::json(status, json!({"message": message, "errors": errors})).refused(reason)
}

fn v2_one(status: u16, message: &str, err_msg: impl Into<String>) -> Reply {
    v2_error(status, message, vec![json!({"errMsg": err_msg.into()})])
}

fn v2_not_found(what: &str, id: &str) -> Reply {
    v2_one(
        404,
        "Not Found",
        format!("There is no {what} with the id: {id}."),
    )
}

fn v1_error(status: u16, errors: Vec<String>) -> Reply {
    let reason = errors.join("; ");
    Reply::json(status, json!({"error": errors})).refused(reason)
}

fn with_index(mut err: Value, idx: Option<usize>, prop: Option<&str>) -> Value {
    if let Some(obj) = err.as_object_mut() {
        if let Some(i) = idx {
            obj.insert("transaction_index".into(), json!(i));
        }
        if let Some(p) = prop {
            obj.insert("invalid_property".into(), json!(p));
        }
    }
    err
}

/// Where a v2 field sits, for messages: `transactions[3]` (index 3) or `transaction`.
struct At {
    label: String,
    idx: Option<usize>,
}

impl At {
    fn err(&self, errs: &mut Vec<Value>, prop: &str, msg: String) {
        errs.push(with_index(json!({"errMsg": msg}), self.idx, Some(prop)));
    }
}

/// Parsed body (JSON object) or the reply refusing it.
fn json_object_body(req: &Request, v1: bool) -> Result<Map<String, Value>, Box<Reply>> {
    let refuse = |msg: String| {
        Box::new(if v1 {
            Reply::json(400, json!({"error": msg.clone()})).refused(msg)
        } else {
            v2_one(400, "Invalid Request Body", msg)
        })
    };
    let ct = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/json") {
        return Err(refuse(format!(
            "Request body must be JSON with Content-Type: application/json (got {:?}).",
            req.header("content-type").unwrap_or("")
        )));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(refuse(format!(
            "Request body must be a JSON object, received '{}'.",
            json_type(&other)
        ))),
        Err(e) => Err(refuse(format!("Request body is not valid JSON: {e}."))),
    }
}

impl State {
    fn finish(&mut self, seq: u64, reply: &Reply) {
        let outcome = if reply.cut {
            Outcome::Cut
        } else {
            Outcome::Status(reply.status)
        };
        let Some(entry) = self.log.iter_mut().rev().find(|r| r.seq == seq) else {
            return;
        };
        entry.outcome = outcome;
        let endpoint = entry.endpoint.clone();
        if let Some(reason) = &reply.reason {
            self.rejections.push(Rejection {
                seq,
                endpoint,
                status: reply.status,
                reason: reason.clone(),
                response: reply.body.clone().unwrap_or(Value::Null),
            });
        }
    }

    fn handle(&mut self, seq: u64, req: &Request) -> Reply {
        let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
        let version = segments.first().copied().unwrap_or("");
        let is_v1 = version == "v1";
        let mut extra = Vec::new();

        // Injected throttling: before the rate limit, and uses none of its slots.
        if self.faults.throttle_next > 0 {
            self.faults.throttle_next -= 1;
            let secs = self.faults.throttle_retry_after_secs;
            *self.injected.entry("429").or_default() += 1;
            return self.too_many(is_v1, secs, "injected 429 (throttle_next)");
        }
        if let Some(limit) = self.faults.rate_limit {
            let window = self.faults.rate_limit_window;
            let now = Instant::now();
            while self
                .hits
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                self.hits.pop_front();
            }
            let reset = |hits: &VecDeque<Instant>| {
                hits.front()
                    .map_or(window, |t| (*t + window).saturating_duration_since(now))
            };
            if self.hits.len() >= limit as usize {
                let wait = reset(&self.hits);
                let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
                return self
                    .too_many(
                        is_v1,
                        secs,
                        format!("rate limit: {limit} requests per {window:?}"),
                    )
                    .header("RateLimit-Limit", limit)
                    .header("RateLimit-Remaining", 0)
                    .header("RateLimit-Reset", secs);
            }
            self.hits.push_back(now);
            let secs = reset(&self.hits).as_millis().div_ceil(1000) as u64;
            extra.push(("RateLimit-Limit".to_string(), limit.to_string()));
            extra.push((
                "RateLimit-Remaining".to_string(),
                (limit as usize - self.hits.len()).to_string(),
            ));
            extra.push(("RateLimit-Reset".to_string(), secs.to_string()));
        }
        let mut reply = self.route(seq, req, &segments, is_v1);
        reply.headers.extend(extra);
        reply
    }

    fn too_many(&self, v1: bool, secs: u64, reason: impl Into<String>) -> Reply {
        let body = if v1 {
            json!({"error": "Too many requests, please try again later."})
        } else {
            json!({"message": "Too Many Requests", "errors": [{"errMsg": "Too many requests, please try again later."}]})
        };
        Reply::json(429, body)
            .header("Retry-After", secs)
            .refused(reason)
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && token.trim() == self.token
    }

    fn route(&mut self, seq: u64, req: &Request, seg: &[&str], is_v1: bool) -> Reply {
        let version = seg.first().copied().unwrap_or("");
        if version != "v1" && version != "v2" {
            return v2_one(
                404,
                "Not Found",
                format!("No route: {} {}", req.method, req.path),
            );
        }
        if !self.authorized(req) {
            let reason = if req.header("authorization").is_some() {
                "401: wrong token"
            } else {
                "401: no Authorization header"
            };
            return if is_v1 {
                Reply::json(401, json!({"error": "Access token does not exist."})).refused(reason)
            } else {
                v2_one(401, "Unauthorized", "Access token does not exist.").refused(reason)
            };
        }
        let method = req.method.as_str();
        match (method, &seg[1..]) {
            ("POST", ["transactions"]) => self.insert(seq, req, is_v1),
            ("GET", ["me"]) if !is_v1 => self.v2_me(),
            ("GET", ["manual_accounts"]) if !is_v1 => Reply::json(
                200,
                json!({"manual_accounts": self.manual_accounts.iter().map(v2_account_json).collect::<Vec<_>>()}),
            ),
            ("PUT", ["manual_accounts", id]) if !is_v1 => self.v2_update_account(req, id),
            ("GET", ["plaid_accounts"]) if !is_v1 => Reply::json(
                200,
                json!({"plaid_accounts": self.plaid_accounts.iter().map(plaid_json).collect::<Vec<_>>()}),
            ),
            ("POST", ["plaid_accounts", "fetch"]) => self.plaid_fetch(req, is_v1),
            ("GET", ["categories"]) if !is_v1 => self.v2_categories(req),
            ("GET", ["tags"]) if !is_v1 => Reply::json(
                200,
                json!({"tags": self.tags.iter().map(v2_tag_json).collect::<Vec<_>>()}),
            ),
            ("POST", ["tags"]) if !is_v1 => self.v2_create_tag(req),
            ("PUT", ["transactions", id]) if !is_v1 => self.v2_update_transaction(req, id),
            ("DELETE", ["transactions", id]) if !is_v1 => self.v2_delete_transaction(id),
            ("GET", ["assets"]) if is_v1 => Reply::json(
                200,
                json!({"assets": self.manual_accounts.iter().map(v1_asset_json).collect::<Vec<_>>()}),
            ),
            ("PUT", ["assets", id]) if is_v1 => self.v1_update_asset(req, id),
            ("GET", ["tags"]) if is_v1 => Reply::json(
                200,
                Value::Array(
                    self.tags
                        .iter()
                        .map(|t| json!({"id": t.id, "name": t.name, "description": t.description, "archived": false}))
                        .collect(),
                ),
            ),
            ("GET", ["categories"]) if is_v1 => Reply::json(
                200,
                json!({"categories": self.categories.iter().map(|c| self.category_json(c, false)).collect::<Vec<_>>()}),
            ),
            ("GET", ["plaid_accounts"]) if is_v1 => Reply::json(
                200,
                json!({"plaid_accounts": self.plaid_accounts.iter().map(plaid_json).collect::<Vec<_>>()}),
            ),
            _ => {
                if is_v1 {
                    Reply::json(404, json!({"error": format!("No route: {} {}", req.method, req.path)}))
                        .refused(format!("no route: {} {}", req.method, req.path))
                } else {
                    v2_one(404, "Not Found", format!("No route: {} {}", req.method, req.path))
                }
            }
        }
    }

    // --- inserts -------------------------------------------------------------------------

    fn insert(&mut self, seq: u64, req: &Request, is_v1: bool) -> Reply {
        if self.faults.fail_next_inserts > 0 {
            self.faults.fail_next_inserts -= 1;
            return self.injected_500(is_v1, "injected 500 (fail_next_inserts)");
        }
        let p = self.faults.insert_failure_rate;
        if self.rng.chance(p) {
            return self.injected_500(is_v1, format!("injected 500 (insert_failure_rate {p})"));
        }
        let reply = if is_v1 {
            self.v1_insert(seq, req)
        } else {
            self.v2_insert(seq, req)
        };
        if reply.status / 100 == 2 && reply.reason.is_none() {
            let cut = if self.faults.cut_next_inserts > 0 {
                self.faults.cut_next_inserts -= 1;
                true
            } else {
                let p = self.faults.cut_rate;
                self.rng.chance(p)
            };
            if cut {
                *self.injected.entry("cut").or_default() += 1;
                return Reply { cut: true, ..reply };
            }
        }
        reply
    }

    fn injected_500(&mut self, v1: bool, reason: impl Into<String>) -> Reply {
        *self.injected.entry("500").or_default() += 1;
        let body = if v1 {
            json!({"error": "Internal Server Error"})
        } else {
            json!({"message": "Internal Server Error", "errors": [{"errMsg": "Internal Server Error (injected by the fake)."}]})
        };
        Reply::json(500, body).refused(reason)
    }

    fn has_manual(&self, id: i64) -> bool {
        self.manual_accounts.iter().any(|a| a.id == id)
    }

    fn has_plaid(&self, id: i64) -> bool {
        self.plaid_accounts.iter().any(|a| a.id == id)
    }

    fn category(&self, id: i64) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    fn has_tag(&self, id: i64) -> bool {
        self.tags.iter().any(|t| t.id == id)
    }

    /// Validates one v2 transaction property (insert or update). Pushes errors.
    fn check_v2_field(&self, at: &At, key: &str, v: &Value, errs: &mut Vec<Value>) {
        let l = &at.label;
        let type_err = |errs: &mut Vec<Value>, expected: &str| {
            at.err(
                errs,
                key,
                format!(
                    "{l} invalid value for property '{key}'. Expected '{expected}', received '{}'.",
                    json_type(v)
                ),
            )
        };
        let nullable_int = |errs: &mut Vec<Value>| -> Option<i64> {
            match v {
                Value::Null => None,
                _ => match as_int(v) {
                    Some(n) => Some(n),
                    None => {
                        type_err(errs, "integer");
                        None
                    }
                },
            }
        };
        match key {
            "date" => {
                if !valid_date(v) {
                    at.err(
                        errs,
                        key,
                        format!(
                            "{l} date must be a valid date in YYYY-MM-DD format: {}",
                            shown(v)
                        ),
                    );
                }
            }
            "amount" => {
                if amount_units(v).is_none() {
                    at.err(
                        errs,
                        key,
                        format!(
                            "{l} amount must be a number or a string matching ^-?\\d+(\\.\\d{{1,4}})?$: {}",
                            shown(v)
                        ),
                    );
                }
            }
            "currency" => {
                if !v.as_str().is_some_and(|c| CURRENCIES.contains(&c)) {
                    at.err(
                        errs,
                        key,
                        format!(
                            "{l} currency must be a supported lowercase ISO 4217 code: {}",
                            shown(v)
                        ),
                    );
                }
            }
            "payee" | "notes" | "original_name" => {
                let limit = match key {
                    "payee" => self.payee_limit,
                    "notes" => self.notes_limit,
                    _ => None,
                };
                match v {
                    Value::Null if key != "payee" => {}
                    Value::String(s) => {
                        let n = s.chars().count();
                        if let Some(max) = limit.filter(|max| n > *max) {
                            at.err(
                                errs,
                                key,
                                format!(
                                    "{l} {key} must be at most {max} characters, received {n}."
                                ),
                            );
                        }
                    }
                    _ => type_err(errs, "string"),
                }
            }
            "category_id" => {
                if let Some(id) = nullable_int(errs) {
                    match self.category(id) {
                        None => at.err(errs, key, format!("{l} category ID does not exist: {id}")),
                        Some(c) if c.is_group => at.err(
                            errs,
                            key,
                            format!("{l} category ID is a category group: {id}"),
                        ),
                        Some(_) => {}
                    }
                }
            }
            "manual_account_id" => {
                if let Some(id) = nullable_int(errs) {
                    if !self.has_manual(id) {
                        at.err(
                            errs,
                            key,
                            format!("{l} manual account ID does not exist: {id}"),
                        );
                    }
                }
            }
            "plaid_account_id" => {
                if let Some(id) = nullable_int(errs) {
                    if !self.has_plaid(id) {
                        at.err(
                            errs,
                            key,
                            format!("{l} plaid account ID does not exist: {id}"),
                        );
                    }
                }
            }
            "recurring_id" => {
                if let Some(id) = nullable_int(errs) {
                    if !self.recurring.contains(&id) {
                        at.err(errs, key, format!("{l} recurring ID does not exist: {id}"));
                    }
                }
            }
            "status" => {
                if !matches!(v.as_str(), Some("reviewed" | "unreviewed")) {
                    at.err(
                        errs,
                        key,
                        format!(
                            "{l} status must be either 'reviewed' or 'unreviewed': {}",
                            shown(v)
                        ),
                    );
                }
            }
            "tag_ids" | "additional_tag_ids" => match v.as_array() {
                None => type_err(errs, "array"),
                Some(ids) => {
                    for id in ids {
                        match as_int(id) {
                            None => at.err(
                                errs,
                                key,
                                format!(
                                    "{l} {key} must contain integers, received '{}'.",
                                    shown(id)
                                ),
                            ),
                            Some(id) if !self.has_tag(id) => {
                                at.err(errs, key, format!("{l} tag ID does not exist: {id}"))
                            }
                            Some(_) => {}
                        }
                    }
                }
            },
            "external_id" => match v {
                Value::Null => {}
                Value::String(s) => {
                    let n = s.chars().count();
                    if n > MAX_EXTERNAL_ID {
                        at.err(errs, key, format!("{l} external_id must be at most {MAX_EXTERNAL_ID} characters, received {n}."));
                    }
                }
                _ => type_err(errs, "string"),
            },
            "custom_metadata" => match v {
                Value::Null => {}
                Value::Object(_) => {
                    let n = v.to_string().chars().count();
                    if n > MAX_CUSTOM_METADATA {
                        at.err(
                            errs,
                            key,
                            format!("{l} custom_metadata must not exceed {MAX_CUSTOM_METADATA} characters when stringified, received {n}."),
                        );
                    }
                }
                _ => type_err(errs, "object"),
            },
            _ => at.err(errs, key, format!("Invalid property '{key}' in {l}.")),
        }
    }

    fn v2_insert(&mut self, seq: u64, req: &Request) -> Reply {
        const FAILURE: &str = "Request Validation Failure";
        let body = match json_object_body(req, false) {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let mut errs = Vec::new();
        for key in body.keys() {
            if !V2_BODY_KEYS.contains(&key.as_str()) {
                errs.push(with_index(
                    json!({"errMsg": format!("Invalid property '{key}' in request body.")}),
                    None,
                    Some(key.as_str()),
                ));
            }
        }
        let mut flags = InsertFlags::default();
        for (key, slot) in [
            ("apply_rules", &mut flags.apply_rules),
            ("skip_duplicates", &mut flags.skip_duplicates),
            ("skip_balance_update", &mut flags.skip_balance_update),
        ] {
            match body.get(key) {
                None => {}
                Some(Value::Bool(b)) => *slot = *b,
                Some(other) => errs.push(with_index(
                    json!({"errMsg": format!("Invalid value for property '{key}'. Expected 'boolean', received '{}'.", json_type(other))}),
                    None,
                    Some(key),
                )),
            }
        }
        let txs = match body.get("transactions") {
            None => {
                errs.push(with_index(
                    json!({"errMsg": "Missing required property 'transactions' in request body."}),
                    None,
                    Some("transactions"),
                ));
                return v2_error(400, FAILURE, errs);
            }
            Some(Value::Array(txs)) => txs,
            Some(other) => {
                errs.push(with_index(
                    json!({"errMsg": format!("Invalid value for property 'transactions'. Expected 'array', received '{}'.", json_type(other))}),
                    None,
                    Some("transactions"),
                ));
                return v2_error(400, FAILURE, errs);
            }
        };
        if txs.is_empty() || txs.len() > MAX_BATCH {
            errs.push(with_index(
                json!({"errMsg": format!("transactions must contain 1 to {MAX_BATCH} items, received {}.", txs.len())}),
                None,
                Some("transactions"),
            ));
            return v2_error(400, FAILURE, errs);
        }
        let mut external_ids: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, tx) in txs.iter().enumerate() {
            let at = At {
                label: format!("transactions[{i}]"),
                idx: Some(i),
            };
            let Some(obj) = tx.as_object() else {
                at.err(
                    &mut errs,
                    "transactions",
                    format!(
                        "transactions[{i}] must be an object, received '{}'.",
                        json_type(tx)
                    ),
                );
                continue;
            };
            for required in ["date", "amount"] {
                if !obj.contains_key(required) {
                    at.err(
                        &mut errs,
                        required,
                        format!("Missing required property '{required}' in transactions[{i}]."),
                    );
                }
            }
            for (key, v) in obj {
                if V2_TX_KEYS.contains(&key.as_str()) {
                    self.check_v2_field(&at, key, v, &mut errs);
                } else {
                    at.err(
                        &mut errs,
                        key,
                        format!("Invalid property '{key}' in transactions[{i}]."),
                    );
                }
            }
            let manual = obj.get("manual_account_id").and_then(as_int);
            let plaid = obj.get("plaid_account_id").and_then(as_int);
            if manual.is_some() && plaid.is_some() {
                at.err(
                    &mut errs,
                    "plaid_account_id",
                    format!("transactions[{i}] may not set both manual_account_id and plaid_account_id."),
                );
            }
            if let Some(ext) = obj.get("external_id").and_then(Value::as_str) {
                if plaid.is_some() {
                    at.err(
                        &mut errs,
                        "external_id",
                        format!("transactions[{i}] external_id cannot be set on a transaction of a synced (Plaid) account."),
                    );
                }
                external_ids.entry(ext.to_string()).or_default().push(i);
            }
        }
        for (ext, indices) in &external_ids {
            if indices.len() > 1 {
                errs.push(json!({
                    "errMsg": "Duplicate External IDs found in the request body",
                    "error": "Duplicate External ID",
                    "transaction_property": "external_id",
                    "external_id": ext,
                    "transactions_indices": indices,
                }));
            }
        }
        if !errs.is_empty() {
            return v2_error(400, FAILURE, errs);
        }

        // Valid: dedupe against what was stored before this request, then store.
        let existing = self.transactions.len();
        let mut created = Vec::new();
        let mut skipped = Vec::new();
        for (i, tx) in txs.iter().enumerate() {
            let obj = tx.as_object().expect("validated");
            let mut stored = self.build_stored(seq, i, Api::V2, obj, flags);
            if let Some((reason, id)) = self.duplicate_of(&stored, existing, flags.skip_duplicates)
            {
                skipped.push(json!({
                    "reason": reason,
                    "request_transactions_index": i,
                    "existing_transaction_id": id,
                    "request_transaction": tx,
                }));
                continue;
            }
            stored.id = self.alloc_id();
            created.push(v2_transaction_json(&stored));
            self.transactions.push(stored);
        }
        Reply::json(
            201,
            json!({"transactions": created, "skipped_duplicates": skipped}),
        )
    }

    /// `(reason, existing id)` when `t` duplicates one of the first `existing` stored transactions.
    fn duplicate_of(
        &self,
        t: &StoredTransaction,
        existing: usize,
        skip_duplicates: bool,
    ) -> Option<(&'static str, i64)> {
        let before = &self.transactions[..existing];
        if let (Some(account), Some(ext)) = (t.manual_account_id, t.external_id.as_deref()) {
            if let Some(d) = before.iter().find(|s| {
                s.manual_account_id == Some(account) && s.external_id.as_deref() == Some(ext)
            }) {
                return Some(("duplicate_external_id", d.id));
            }
        }
        if skip_duplicates {
            if let Some(d) = before.iter().find(|s| {
                s.manual_account_id == t.manual_account_id
                    && s.plaid_account_id == t.plaid_account_id
                    && s.payee == t.payee
                    && s.date == t.date
                    && s.debit_amount == t.debit_amount
            }) {
                return Some(("duplicate_payee_amount_date", d.id));
            }
        }
        None
    }

    fn alloc_id(&mut self) -> i64 {
        let id = self.next_txn_id;
        self.next_txn_id += 1;
        id
    }

    /// The transaction as it would be stored (id 0 until stored).
    fn build_stored(
        &self,
        seq: u64,
        index: usize,
        api: Api,
        obj: &Map<String, Value>,
        flags: InsertFlags,
    ) -> StoredTransaction {
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let int = |k: &str| obj.get(k).and_then(as_int);
        let amount_json = obj.get("amount").cloned().unwrap_or(Value::Null);
        let units = amount_units(&amount_json).unwrap_or(0);
        let debit_units = if flags.debit_as_negative {
            -units
        } else {
            units
        };
        let (manual, tag_ids, default_status) = match api {
            Api::V2 => (
                int("manual_account_id"),
                obj.get("tag_ids")
                    .and_then(Value::as_array)
                    .map(|ids| ids.iter().filter_map(as_int).collect())
                    .unwrap_or_default(),
                "unreviewed",
            ),
            // v1 tags are resolved (names may create tags) only once the transaction is stored.
            Api::V1 => (int("asset_id"), Vec::new(), "uncleared"),
        };
        StoredTransaction {
            id: 0,
            api,
            request_seq: seq,
            request_index: index,
            date: text("date").unwrap_or_default(),
            amount: shown(&amount_json),
            amount_json,
            debit_amount: format_units(debit_units),
            currency: text("currency").unwrap_or_else(|| self.primary_currency.clone()),
            payee: text("payee"),
            original_name: text("original_name"),
            notes: text("notes"),
            manual_account_id: manual,
            plaid_account_id: int("plaid_account_id"),
            category_id: int("category_id"),
            recurring_id: int("recurring_id"),
            tag_ids,
            status: text("status").unwrap_or_else(|| default_status.to_string()),
            external_id: text("external_id"),
            custom_metadata: obj.get("custom_metadata").filter(|v| !v.is_null()).cloned(),
            flags,
            raw: Value::Object(obj.clone()),
            created_at: now_rfc3339(),
        }
    }

    /// v1 `tags`: ids must exist; names match case-insensitively or create a tag.
    fn v1_tag_ids(&mut self, obj: &Map<String, Value>) -> Vec<i64> {
        let mut ids = Vec::new();
        for tag in obj
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = as_int(tag) {
                ids.push(id);
            } else if let Some(name) = tag.as_str() {
                let id = match self.tags.iter().find(|t| t.name.eq_ignore_ascii_case(name)) {
                    Some(t) => t.id,
                    None => self.create_tag(name, None),
                };
                ids.push(id);
            }
        }
        ids
    }

    fn create_tag(&mut self, name: &str, description: Option<String>) -> i64 {
        let id = self.next_tag_id;
        self.next_tag_id += 1;
        self.tags.push(Tag {
            id,
            name: name.to_string(),
            description,
        });
        id
    }

    fn v1_insert(&mut self, seq: u64, req: &Request) -> Reply {
        let body = match json_object_body(req, true) {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let mut errs: Vec<String> = Vec::new();
        for key in body.keys() {
            if !V1_BODY_KEYS.contains(&key.as_str()) {
                errs.push(format!("Unknown property in request body: {key}"));
            }
        }
        let mut flags = InsertFlags::default();
        for (key, slot) in [
            ("apply_rules", &mut flags.apply_rules),
            ("skip_duplicates", &mut flags.skip_duplicates),
            ("check_for_recurring", &mut flags.check_for_recurring),
            ("debit_as_negative", &mut flags.debit_as_negative),
            ("skip_balance_update", &mut flags.skip_balance_update),
        ] {
            match body.get(key) {
                None => {}
                Some(Value::Bool(b)) => *slot = *b,
                Some(other) => errs.push(format!("{key} must be a boolean: {}", shown(other))),
            }
        }
        let txs = match body.get("transactions") {
            Some(Value::Array(txs)) if !txs.is_empty() && txs.len() <= MAX_BATCH => txs,
            Some(Value::Array(txs)) if !txs.is_empty() => {
                errs.push(format!(
                    "transactions may contain at most {MAX_BATCH} transactions, received {}.",
                    txs.len()
                ));
                return v1_error(200, errs);
            }
            _ => {
                errs.push("transactions must be a non-empty array.".into());
                return v1_error(200, errs);
            }
        };
        let mut external_ids: HashMap<(Option<i64>, String), usize> = HashMap::new();
        for (i, tx) in txs.iter().enumerate() {
            let Some(obj) = tx.as_object() else {
                errs.push(format!("Transaction {i} must be an object."));
                continue;
            };
            for key in obj.keys() {
                if !V1_TX_KEYS.contains(&key.as_str()) {
                    errs.push(format!("Transaction {i} has an unknown property: {key}"));
                }
            }
            match obj.get("date") {
                None | Some(Value::Null) => errs.push(format!("Transaction {i} is missing date.")),
                Some(v) if !valid_date(v) => errs.push(format!(
                    "Transaction {i} date must be in YYYY-MM-DD format: {}",
                    shown(v)
                )),
                _ => {}
            }
            match obj.get("amount") {
                None | Some(Value::Null) => {
                    errs.push(format!("Transaction {i} is missing amount."))
                }
                Some(v) if amount_units(v).is_none() => errs.push(format!(
                    "Transaction {i} amount must be numeric: {}",
                    shown(v)
                )),
                _ => {}
            }
            if let Some(v) = obj.get("currency") {
                if !v.as_str().is_some_and(|c| CURRENCIES.contains(&c)) {
                    errs.push(format!(
                        "Transaction {i} currency is not supported: {}",
                        shown(v)
                    ));
                }
            }
            for (key, max) in [("payee", V1_MAX_PAYEE), ("notes", V1_MAX_NOTES)] {
                match obj.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) if s.chars().count() > max => errs.push(format!(
                        "Transaction {i} {key} must be {max} characters or less."
                    )),
                    Some(Value::String(_)) => {}
                    Some(other) => errs.push(format!(
                        "Transaction {i} {key} must be a string: {}",
                        shown(other)
                    )),
                }
            }
            let int_field = |errs: &mut Vec<String>, key: &str| -> Option<i64> {
                match obj.get(key) {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        let id = as_int(v);
                        if id.is_none() {
                            errs.push(format!(
                                "Transaction {i} {key} must be a number: {}",
                                shown(v)
                            ));
                        }
                        id
                    }
                }
            };
            let asset = int_field(&mut errs, "asset_id");
            if let Some(id) = asset.filter(|id| !self.has_manual(*id)) {
                errs.push(format!("Transaction {i} asset_id does not exist: {id}"));
            }
            let plaid = int_field(&mut errs, "plaid_account_id");
            if let Some(id) = plaid.filter(|id| !self.has_plaid(*id)) {
                errs.push(format!(
                    "Transaction {i} plaid_account_id does not exist: {id}"
                ));
            }
            if asset.is_some() && plaid.is_some() {
                errs.push(format!(
                    "Transaction {i} cannot have both asset_id and plaid_account_id."
                ));
            }
            if let Some(id) = int_field(&mut errs, "category_id") {
                match self.category(id) {
                    None => errs.push(format!("Transaction {i} category_id does not exist: {id}")),
                    Some(c) if c.is_group => errs.push(format!(
                        "Transaction {i} category_id is a category group: {id}"
                    )),
                    Some(_) => {}
                }
            }
            if let Some(id) = int_field(&mut errs, "recurring_id") {
                if !self.recurring.contains(&id) {
                    errs.push(format!("Transaction {i} recurring_id does not exist: {id}"));
                }
            }
            if let Some(v) = obj.get("status") {
                if !matches!(v.as_str(), Some("cleared" | "uncleared")) {
                    errs.push(format!(
                        "Transaction {i} status must be either cleared or uncleared: {}",
                        shown(v)
                    ));
                }
            }
            match obj.get("external_id") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    if s.chars().count() > MAX_EXTERNAL_ID {
                        errs.push(format!("Transaction {i} external_id must be {MAX_EXTERNAL_ID} characters or less."));
                    }
                    if let Some(j) = external_ids.insert((asset, s.clone()), i) {
                        errs.push(format!(
                            "Transaction {i} has the same external_id as transaction {j} in this request: {s}"
                        ));
                    }
                }
                Some(other) => errs.push(format!(
                    "Transaction {i} external_id must be a string: {}",
                    shown(other)
                )),
            }
            match obj.get("tags") {
                None | Some(Value::Null) => {}
                Some(Value::Array(tags)) => {
                    for tag in tags {
                        match tag {
                            Value::String(_) => {}
                            v => match as_int(v) {
                                Some(id) if self.has_tag(id) => {}
                                Some(id) => errs
                                    .push(format!("Transaction {i} tag ID does not exist: {id}")),
                                None => errs.push(format!(
                                    "Transaction {i} tags must be tag IDs or names: {}",
                                    shown(v)
                                )),
                            },
                        }
                    }
                }
                Some(other) => errs.push(format!(
                    "Transaction {i} tags must be an array: {}",
                    shown(other)
                )),
            }
        }
        if !errs.is_empty() {
            // As the real v1: errors in the body with HTTP 200.
            return v1_error(200, errs);
        }
        let existing = self.transactions.len();
        let mut ids = Vec::new();
        for (i, tx) in txs.iter().enumerate() {
            let obj = tx.as_object().expect("validated");
            let mut stored = self.build_stored(seq, i, Api::V1, obj, flags);
            if self
                .duplicate_of(&stored, existing, flags.skip_duplicates)
                .is_some()
            {
                // v1 drops duplicates silently: their ids are just missing.
                continue;
            }
            stored.id = self.alloc_id();
            stored.tag_ids = self.v1_tag_ids(obj);
            ids.push(stored.id);
            self.transactions.push(stored);
        }
        Reply::json(200, json!({"ids": ids}))
    }

    // --- other v2 endpoints --------------------------------------------------------------

    fn v2_me(&self) -> Reply {
        Reply::json(
            200,
            json!({
                "name": "Fake User",
                "email": "fake@example.invalid",
                "id": 18328,
                "account_id": 18221,
                "budget_name": "Fake budget",
                "primary_currency": self.primary_currency,
                "api_key_label": "lm-ingest tests",
            }),
        )
    }

    fn category_json(&self, c: &Category, nested: bool) -> Value {
        let mut v = json!({
            "id": c.id,
            "name": c.name,
            "description": null,
            "is_income": c.is_income,
            "exclude_from_budget": false,
            "exclude_from_totals": false,
            "updated_at": "2025-01-01T00:00:00.000Z",
            "created_at": "2025-01-01T00:00:00.000Z",
            "group_id": c.group_id,
            "is_group": c.is_group,
            "archived": false,
            "archived_at": null,
            "order": null,
            "collapsed": false,
        });
        if nested && c.is_group {
            let children: Vec<Value> = self
                .categories
                .iter()
                .filter(|k| k.group_id == Some(c.id))
                .map(|k| self.category_json(k, false))
                .collect();
            v["children"] = Value::Array(children);
        }
        v
    }

    fn v2_categories(&self, req: &Request) -> Reply {
        let format = req.query_param("format").unwrap_or_else(|| "nested".into());
        let is_group = req.query_param("is_group");
        if format != "nested" && format != "flattened" {
            return v2_one(
                400,
                "Request Validation Failure",
                "must be equal to one of the allowed values: nested, flattened",
            );
        }
        let list: Vec<Value> = match is_group.as_deref() {
            Some("true") => self
                .categories
                .iter()
                .filter(|c| c.is_group)
                .map(|c| self.category_json(c, true))
                .collect(),
            Some("false") => self
                .categories
                .iter()
                .filter(|c| !c.is_group)
                .map(|c| self.category_json(c, false))
                .collect(),
            _ if format == "flattened" => self
                .categories
                .iter()
                .map(|c| self.category_json(c, false))
                .collect(),
            _ => self
                .categories
                .iter()
                .filter(|c| c.group_id.is_none())
                .map(|c| self.category_json(c, true))
                .collect(),
        };
        Reply::json(200, json!({"categories": list}))
    }

    fn v2_create_tag(&mut self, req: &Request) -> Reply {
        let body = match json_object_body(req, false) {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let mut errs = Vec::new();
        for key in body.keys() {
            if !V2_TAG_KEYS.contains(&key.as_str()) {
                errs.push(json!({"errMsg": format!("Invalid property '{key}' in request body.")}));
            }
        }
        let name = match body.get("name") {
            None => {
                errs.push(json!({"errMsg": "Missing required property 'name' in request body."}));
                None
            }
            Some(Value::String(s)) if (1..=100).contains(&s.chars().count()) => Some(s.clone()),
            Some(Value::String(_)) => {
                errs.push(json!({"errMsg": "name must be between 1 and 100 characters."}));
                None
            }
            Some(other) => {
                errs.push(json!({"errMsg": format!("Invalid value for property 'name'. Expected 'string', received '{}'.", json_type(other))}));
                None
            }
        };
        let description = match body.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 200 => Some(s.clone()),
            Some(Value::String(_)) => {
                errs.push(json!({"errMsg": "description must be at most 200 characters."}));
                None
            }
            Some(other) => {
                errs.push(json!({"errMsg": format!("Invalid value for property 'description'. Expected 'string', received '{}'.", json_type(other))}));
                None
            }
        };
        for key in ["text_color", "background_color"] {
            if let Some(v) = body.get(key).filter(|v| !v.is_null() && !v.is_string()) {
                errs.push(json!({"errMsg": format!("Invalid value for property '{key}'. Expected 'string', received '{}'.", json_type(v))}));
            }
        }
        if let Some(v) = body.get("archived").filter(|v| !v.is_boolean()) {
            errs.push(json!({"errMsg": format!("Invalid value for property 'archived'. Expected 'boolean', received '{}'.", json_type(v))}));
        }
        if !errs.is_empty() {
            return v2_error(400, "Invalid Request Body", errs);
        }
        let name = name.expect("validated");
        if self.tags.iter().any(|t| t.name.eq_ignore_ascii_case(&name)) {
            return v2_one(
                400,
                "Invalid Request Body",
                format!("Tag with name '{name}' already exists"),
            );
        }
        let id = self.create_tag(&name, description);
        let tag = self.tags.iter().find(|t| t.id == id).expect("created");
        Reply::json(201, v2_tag_json(tag))
    }

    /// `DELETE /v2/transactions/{id}`: 204 and gone, or 404 for an id it does not have (v1 has
    /// no such route: its 404 is the generic one). The fake keeps no splits or groups, whose
    /// delete the real API refuses.
    fn v2_delete_transaction(&mut self, id: &str) -> Reply {
        let Ok(id) = id.parse::<i64>() else {
            return v2_one(
                400,
                "Request Validation Failure",
                "Invalid value type for path parameter: 'id'. Expected 'number', received 'string'.",
            );
        };
        let Some(pos) = self.transactions.iter().position(|t| t.id == id) else {
            return v2_not_found("transaction", &id.to_string());
        };
        self.transactions.remove(pos);
        Reply::empty(204)
    }

    fn v2_update_transaction(&mut self, req: &Request, id: &str) -> Reply {
        let Ok(id) = id.parse::<i64>() else {
            return v2_one(
                400,
                "Request Validation Failure",
                "Invalid value type for path parameter: 'id'. Expected 'number', received 'string'.",
            );
        };
        let Some(pos) = self.transactions.iter().position(|t| t.id == id) else {
            return v2_not_found("transaction", &id.to_string());
        };
        let body = match json_object_body(req, false) {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let at = At {
            label: "transaction".into(),
            idx: None,
        };
        let mut errs = Vec::new();
        for (key, v) in &body {
            if V2_UPDATE_KEYS.contains(&key.as_str()) {
                self.check_v2_field(&at, key, v, &mut errs);
            } else if !V2_UPDATE_IGNORED.contains(&key.as_str()) {
                errs.push(json!({"errMsg": format!("Invalid property '{key}' in request body."), "invalid_property": key}));
            }
        }
        if !body.keys().any(|k| V2_UPDATE_KEYS.contains(&k.as_str())) {
            errs.push(json!({"errMsg": "A request to update a transaction must include at least one updatable property."}));
        }
        if body.contains_key("tag_ids") && body.contains_key("additional_tag_ids") {
            errs.push(json!({"errMsg": "tag_ids and additional_tag_ids may not both be set.", "invalid_property": "additional_tag_ids"}));
        }
        let current = &self.transactions[pos];
        let pick = |key: &str, old: Option<i64>| match body.get(key) {
            Some(v) => as_int(v),
            None => old,
        };
        let manual = pick("manual_account_id", current.manual_account_id);
        let plaid = pick("plaid_account_id", current.plaid_account_id);
        if manual.is_some() && plaid.is_some() {
            errs.push(json!({"errMsg": "manual_account_id and plaid_account_id may not both be set.", "invalid_property": "plaid_account_id"}));
        }
        let external = match body.get("external_id") {
            Some(v) => v.as_str().map(str::to_string),
            None => current.external_id.clone(),
        };
        if let Some(ext) = body.get("external_id").and_then(Value::as_str) {
            match manual {
                None => errs.push(json!({"errMsg": "external_id can only be set on a transaction with a manual_account_id.", "invalid_property": "external_id"})),
                Some(account) => {
                    if let Some(other) = self.transactions.iter().find(|t| {
                        t.id != id && t.manual_account_id == Some(account) && t.external_id.as_deref() == Some(ext)
                    }) {
                        errs.push(json!({"errMsg": format!("A transaction with external_id '{ext}' already exists in manual account {account}: {}", other.id), "invalid_property": "external_id"}));
                    }
                }
            }
        }
        if !errs.is_empty() {
            return v2_error(400, "Request Validation Failure", errs);
        }
        let t = &mut self.transactions[pos];
        for (key, v) in &body {
            let text = v.as_str().map(str::to_string);
            match key.as_str() {
                "date" => t.date = text.unwrap_or_default(),
                "amount" => {
                    t.amount = shown(v);
                    t.amount_json = v.clone();
                    t.debit_amount = format_units(amount_units(v).unwrap_or(0));
                }
                "currency" => t.currency = text.unwrap_or_default(),
                "payee" => t.payee = text,
                "notes" => t.notes = text,
                "category_id" => t.category_id = as_int(v),
                "recurring_id" => t.recurring_id = as_int(v),
                "status" => t.status = text.unwrap_or_default(),
                "tag_ids" => {
                    t.tag_ids = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(as_int)
                        .collect()
                }
                "additional_tag_ids" => {
                    for tag in v.as_array().into_iter().flatten().filter_map(as_int) {
                        if !t.tag_ids.contains(&tag) {
                            t.tag_ids.push(tag);
                        }
                    }
                }
                "custom_metadata" => t.custom_metadata = Some(v.clone()).filter(|v| !v.is_null()),
                _ => {}
            }
        }
        t.manual_account_id = manual;
        t.plaid_account_id = plaid;
        t.external_id = external;
        // The spec answers a successful update with 201.
        Reply::json(201, v2_transaction_json(t))
    }

    fn v2_update_account(&mut self, req: &Request, id: &str) -> Reply {
        let Some(pos) = id
            .parse::<i64>()
            .ok()
            .and_then(|id| self.manual_accounts.iter().position(|a| a.id == id))
        else {
            return v2_not_found("manual account", id);
        };
        let body = match json_object_body(req, false) {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let mut errs = Vec::new();
        for (key, v) in &body {
            if V2_ACCOUNT_UPDATE_IGNORED.contains(&key.as_str()) {
                continue;
            }
            if !V2_ACCOUNT_UPDATE_KEYS.contains(&key.as_str()) {
                errs.push(json!({"errMsg": format!("Invalid property '{key}' in request body."), "invalid_property": key}));
                continue;
            }
            let ok = match key.as_str() {
                "balance" => amount_units(v).is_some(),
                "currency" => v.as_str().is_some_and(|c| CURRENCIES.contains(&c)),
                "name" => v
                    .as_str()
                    .is_some_and(|s| (1..=45).contains(&s.chars().count())),
                "institution_name" => {
                    v.is_null()
                        || v.as_str()
                            .is_some_and(|s| (1..=50).contains(&s.chars().count()))
                }
                "subtype" => v
                    .as_str()
                    .is_some_and(|s| (1..=100).contains(&s.chars().count())),
                "display_name" => v.is_null() || v.is_string(),
                "type" => v.as_str().is_some_and(|s| ACCOUNT_TYPES.contains(&s)),
                "status" => matches!(v.as_str(), Some("active" | "closed")),
                "balance_as_of" => v.as_str().is_some_and(|s| {
                    valid_date(v) || chrono::DateTime::parse_from_rfc3339(s).is_ok()
                }),
                "closed_on" => {
                    v.is_null()
                        || v.as_str().is_some_and(|s| {
                            valid_date(v) || chrono::DateTime::parse_from_rfc3339(s).is_ok()
                        })
                }
                "external_id" => {
                    v.is_null()
                        || v.as_str()
                            .is_some_and(|s| s.chars().count() <= MAX_EXTERNAL_ID)
                }
                "custom_metadata" => v.is_null() || v.is_object(),
                "exclude_from_transactions" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                errs.push(json!({"errMsg": format!("Invalid value for property '{key}': {}", shown(v)), "invalid_property": key}));
            }
        }
        if !body
            .keys()
            .any(|k| V2_ACCOUNT_UPDATE_KEYS.contains(&k.as_str()))
        {
            errs.push(json!({"errMsg": "A request to update a manual account must include at least one updatable property."}));
        }
        if !errs.is_empty() {
            return v2_error(400, "Request Validation Failure", errs);
        }
        let account = &mut self.manual_accounts[pos];
        apply_account_update(account, &body, "balance", "currency", "name", "type");
        Reply::json(200, v2_account_json(account))
    }

    fn plaid_fetch(&mut self, req: &Request, is_v1: bool) -> Reply {
        // v2 takes query parameters; v1 an optional JSON body.
        let (start, end, id) = if is_v1 {
            let body: Map<String, Value> = if req.body.is_empty() {
                Map::new()
            } else {
                match json_object_body(req, true) {
                    Ok(b) => b,
                    Err(reply) => return *reply,
                }
            };
            (
                body.get("start_date").map(shown),
                body.get("end_date").map(shown),
                body.get("plaid_account_id").map(shown),
            )
        } else {
            (
                req.query_param("start_date"),
                req.query_param("end_date"),
                req.query_param("id"),
            )
        };
        if !is_v1 && start.is_some() != end.is_some() {
            return v2_one(
                400,
                "Invalid Request Parameters",
                "Both 'start_date' and 'end_date' must be specified.",
            );
        }
        let ids: Vec<i64> = match id {
            Some(raw) => match raw.parse::<i64>().ok().filter(|id| self.has_plaid(*id)) {
                Some(id) => vec![id],
                None if is_v1 => {
                    return v1_error(404, vec![format!("Plaid account ID does not exist: {raw}")]);
                }
                None => return v2_not_found("plaid account", &raw),
            },
            None => self.plaid_accounts.iter().map(|a| a.id).collect(),
        };
        let now = Instant::now();
        let cooldown = self.plaid_cooldown;
        let eligible: Vec<i64> = ids
            .into_iter()
            .filter(|id| {
                self.plaid_fetched
                    .get(id)
                    .is_none_or(|t| now.duration_since(*t) >= cooldown)
            })
            .collect();
        for id in &eligible {
            self.plaid_fetched.insert(*id, now);
        }
        match (is_v1, eligible.is_empty()) {
            (true, empty) => Reply::json(200, json!(!empty)),
            (false, false) => Reply::empty(202),
            (false, true) => v2_one(
                425,
                "Too Early",
                "Please wait at least 60 seconds between fetch requests.",
            ),
        }
    }

    fn v1_update_asset(&mut self, req: &Request, id: &str) -> Reply {
        let Some(pos) = id
            .parse::<i64>()
            .ok()
            .and_then(|id| self.manual_accounts.iter().position(|a| a.id == id))
        else {
            return Reply::json(404, json!({"error": "Asset not found."}))
                .refused(format!("no asset {id}"));
        };
        let body = match json_object_body(req, true) {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let mut errs = Vec::new();
        for (key, v) in &body {
            if !V1_ASSET_KEYS.contains(&key.as_str()) {
                errs.push(format!("Unknown property in request body: {key}"));
                continue;
            }
            let ok = match key.as_str() {
                "balance" => amount_units(v).is_some(),
                "currency" => v.as_str().is_some_and(|c| CURRENCIES.contains(&c)),
                "name" => v.as_str().is_some_and(|s| s.chars().count() <= 45),
                "subtype_name" => {
                    v.is_null() || v.as_str().is_some_and(|s| s.chars().count() <= 25)
                }
                "institution_name" => {
                    v.is_null() || v.as_str().is_some_and(|s| s.chars().count() <= 50)
                }
                "type_name" => v.as_str().is_some_and(|s| {
                    [
                        "cash",
                        "credit",
                        "investment",
                        "other",
                        "real estate",
                        "loan",
                        "vehicle",
                        "cryptocurrency",
                        "employee compensation",
                    ]
                    .contains(&s)
                }),
                "balance_as_of" => v.as_str().is_some_and(|s| {
                    valid_date(v) || chrono::DateTime::parse_from_rfc3339(s).is_ok()
                }),
                _ => true,
            };
            if !ok {
                errs.push(format!("{key} is invalid: {}", shown(v)));
            }
        }
        if !errs.is_empty() {
            let reason = errs.join("; ");
            return Reply::json(400, json!({"errors": errs})).refused(reason);
        }
        let account = &mut self.manual_accounts[pos];
        apply_account_update(account, &body, "balance", "currency", "name", "type_name");
        Reply::json(200, v1_asset_json(account))
    }
}

fn apply_account_update(
    account: &mut ManualAccount,
    body: &Map<String, Value>,
    balance: &str,
    currency: &str,
    name: &str,
    type_key: &str,
) {
    if let Some(units) = body.get(balance).and_then(amount_units) {
        account.balance = format_units(units);
        account.balance_as_of = body
            .get("balance_as_of")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(now_rfc3339);
    }
    if let Some(c) = body.get(currency).and_then(Value::as_str) {
        account.currency = c.to_string();
    }
    if let Some(n) = body.get(name).and_then(Value::as_str) {
        account.name = n.to_string();
    }
    if let Some(t) = body.get(type_key).and_then(Value::as_str) {
        account.account_type = t.to_string();
    }
    account.raw_updates.push(Value::Object(body.clone()));
}

fn v2_transaction_json(t: &StoredTransaction) -> Value {
    let units = amount_units(&t.amount_json).unwrap_or(0);
    let to_base = units as f64 / 10_000.0;
    json!({
        "id": t.id,
        "date": t.date,
        "amount": format_units(units),
        "currency": t.currency,
        "to_base": to_base,
        "recurring_id": t.recurring_id,
        "payee": t.payee.clone().unwrap_or_else(|| "[No Payee]".into()),
        "original_name": t.original_name.clone().or_else(|| t.payee.clone()),
        "category_id": t.category_id,
        "notes": t.notes,
        "status": t.status,
        "is_pending": false,
        "created_at": t.created_at,
        "updated_at": t.created_at,
        "split_parent_id": null,
        "is_group_parent": false,
        "group_parent_id": null,
        "manual_account_id": t.manual_account_id,
        "plaid_account_id": t.plaid_account_id,
        "tag_ids": t.tag_ids,
        "source": "api",
        "external_id": t.external_id,
        "custom_metadata": t.custom_metadata,
        "plaid_metadata": null,
    })
}

fn v2_account_json(a: &ManualAccount) -> Value {
    let to_base = amount_units(&Value::String(a.balance.clone())).unwrap_or(0) as f64 / 10_000.0;
    json!({
        "id": a.id,
        "name": a.name,
        "institution_name": null,
        "display_name": null,
        "type": a.account_type,
        "subtype": null,
        "balance": a.balance,
        "currency": a.currency,
        "to_base": to_base,
        "balance_as_of": a.balance_as_of,
        "status": "active",
        "closed_on": null,
        "external_id": null,
        "exclude_from_transactions": false,
        "created_by_name": "Fake User",
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:00.000Z",
    })
}

fn v1_asset_json(a: &ManualAccount) -> Value {
    json!({
        "id": a.id,
        "type_name": a.account_type,
        "subtype_name": null,
        "name": a.name,
        "display_name": null,
        "balance": a.balance,
        "balance_as_of": a.balance_as_of,
        "closed_on": null,
        "currency": a.currency,
        "institution_name": null,
        "exclude_transactions": false,
        "created_at": "2025-01-01T00:00:00.000Z",
    })
}

fn plaid_json(a: &PlaidAccount) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "display_name": a.name,
        "type": "credit",
        "subtype": "credit card",
        "mask": "0000",
        "institution_name": "Fake Bank",
        "status": "active",
        "balance": "0.0000",
        "currency": a.currency,
        "to_base": 0,
    })
}

fn v2_tag_json(t: &Tag) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "text_color": null,
        "background_color": null,
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:00.000Z",
        "archived": false,
        "archived_at": null,
    })
}

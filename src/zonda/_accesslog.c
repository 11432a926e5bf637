/* zonda._accesslog: the two default access log lines built in C, and request ids.
 *
 * An optional accelerator for zonda.accesslog (which has the reference implementation in Python, used when
 * this module is not built, for custom formats, and for any line this code declines). Building a line in
 * Python costs about 10,000 instructions, one to five hundred per field for a dict lookup, a method call or a
 * formatting step; here the whole per-response hook costs about 1,500.
 *
 * Hook is that per-response hook: called with the finished cycle, it appends the line, as UTF-8, to a buffer
 * the writer empties (no str per line, no join, no encode). json_line and plain_line build one line from
 * (scope, status, bytes_sent, duration_seconds, time_text) and return it, for the tests that hold them to the
 * Python lines. Whenever a value is not of the type the common case has (a scope an app replaced, a status
 * that is not an int, text beyond Latin-1 in the plain line ...) the builders raise TypeError and the line is
 * built in Python instead: this code never has to be right about the unusual case, only to recognise it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_cycle_slots.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char stack[1024];
} Buffer;

static void buffer_init(Buffer *b) {
    b->data = b->stack;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof(b->stack);
}

static void buffer_free(Buffer *b) {
    if (b->data != b->stack) {
        PyMem_Free(b->data);
    }
}

static int buffer_grow(Buffer *b, Py_ssize_t n);

/* Room for n more bytes; 0 on success, -1 with MemoryError set. */
static inline int buffer_reserve(Buffer *b, Py_ssize_t n) {
    return b->len + n <= b->cap ? 0 : buffer_grow(b, n);
}

static int buffer_grow(Buffer *b, Py_ssize_t n) {
    Py_ssize_t cap = b->cap;
    while (b->len + n > cap) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Malloc((size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(data, b->data, (size_t)b->len);
    buffer_free(b);
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buffer_add(Buffer *b, const char *s, Py_ssize_t n) {
    if (buffer_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define ADD_LITERAL(b, s) buffer_add((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* Decimal digits of n (snprintf costs ten times as much: it is a general formatter with locale checks). */
static int add_decimal(Buffer *b, long long n) {
    char digits[24];
    char *end = digits + sizeof(digits);
    char *p = end;
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0) {
        *--p = '-';
    }
    return buffer_add(b, p, end - p);
}

static PyObject *decline(const char *what) {
    PyErr_Format(PyExc_TypeError, "access log line: %s", what);
    return NULL;
}

/* A non-negative exact int as decimal digits. */
static int add_int(Buffer *b, PyObject *value) {
    if (!PyLong_CheckExact(value)) {
        decline("not an int");
        return -1;
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (n == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        decline("int out of range");
        return -1;
    }
    return add_decimal(b, n);
}

/* ---------------------------------------------------------------- JSON (as json.encoder's encode_basestring_ascii) */

static const char HEX[] = "0123456789abcdef";

static inline int add_json_char(Buffer *b, Py_UCS4 c) {
    char out[12];
    int n = 0;
    if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {  /* the usual character, written in place */
        if (b->len == b->cap && buffer_reserve(b, 1) < 0) {
            return -1;
        }
        b->data[b->len++] = (char)c;
        return 0;
    } else {
        out[n++] = '\\';
        switch (c) {
            case '\\': out[n++] = '\\'; break;
            case '"': out[n++] = '"'; break;
            case '\b': out[n++] = 'b'; break;
            case '\f': out[n++] = 'f'; break;
            case '\n': out[n++] = 'n'; break;
            case '\r': out[n++] = 'r'; break;
            case '\t': out[n++] = 't'; break;
            default:
                if (c >= 0x10000) {  /* a surrogate pair */
                    Py_UCS4 v = c - 0x10000;
                    Py_UCS4 high = 0xd800 | ((v >> 10) & 0x3ff);
                    c = 0xdc00 | (v & 0x3ff);
                    out[n++] = 'u';
                    out[n++] = HEX[(high >> 12) & 0xf];
                    out[n++] = HEX[(high >> 8) & 0xf];
                    out[n++] = HEX[(high >> 4) & 0xf];
                    out[n++] = HEX[high & 0xf];
                    out[n++] = '\\';
                }
                out[n++] = 'u';
                out[n++] = HEX[(c >> 12) & 0xf];
                out[n++] = HEX[(c >> 8) & 0xf];
                out[n++] = HEX[(c >> 4) & 0xf];
                out[n++] = HEX[c & 0xf];
        }
    }
    return buffer_add(b, out, n);
}

static int add_json_latin1(Buffer *b, const unsigned char *s, Py_ssize_t size);

/* Bytes read as Latin-1, as a quoted JSON string. */
static int add_json_bytes(Buffer *b, PyObject *value) {
    if (!PyBytes_CheckExact(value)) {
        decline("not bytes");
        return -1;
    }
    if (ADD_LITERAL(b, "\"") < 0 ||
        add_json_latin1(b, (const unsigned char *)PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)) < 0) {
        return -1;
    }
    return ADD_LITERAL(b, "\"");
}

/* Characters that JSON takes as they are (json.encoder's ESCAPE_ASCII leaves them alone). */
static inline int json_plain(Py_UCS4 c) {
    return c >= ' ' && c <= '~' && c != '\\' && c != '"';
}

static unsigned char JSON_PLAIN[256];  /* json_plain() of each Latin-1 character, filled at import */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Are all eight bytes of w plain: none below ' ', above '~' (this also catches bytes >= 0x80), '"' or '\\'?
 * The bit tricks of "Bit Twiddling Hacks" (has a byte less than n, more than n, equal to zero), each exact
 * as a yes/no for the whole word. */
static inline int word_is_plain(uint64_t w) {
    uint64_t below = (w - ONES * 0x20) & ~w;
    uint64_t above = (w + ONES * (127 - 0x7e)) | w;
    uint64_t quote = w ^ (ONES * '"'), backslash = w ^ (ONES * '\\');
    uint64_t special = ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash);
    return ((below | above | special) & HIGHS) == 0;
}

/* Latin-1 characters (a bytes object or a one-byte str) into a JSON string's body: runs of plain characters
 * copied whole (found eight at a time), the others escaped. */
static int add_json_latin1(Buffer *b, const unsigned char *s, Py_ssize_t size) {
    Py_ssize_t start = 0, i = 0;
    while (i < size) {
        uint64_t word;
        while (i + 8 <= size && (memcpy(&word, s + i, 8), word_is_plain(word))) {
            i += 8;
        }
        while (i < size && JSON_PLAIN[s[i]]) {
            i++;
        }
        if (i == size) {
            break;
        }
        if (buffer_add(b, (const char *)s + start, i - start) < 0 || add_json_char(b, s[i]) < 0) {
            return -1;
        }
        start = ++i;
    }
    return buffer_add(b, (const char *)s + start, size - start);
}

static int add_json_str_body(Buffer *b, PyObject *value) {
    int kind = PyUnicode_KIND(value);
    if (kind == PyUnicode_1BYTE_KIND) {
        return add_json_latin1(b, PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value));
    }
    const void *data = PyUnicode_DATA(value);
    Py_ssize_t size = PyUnicode_GET_LENGTH(value);
    if (buffer_reserve(b, size) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (add_json_char(b, PyUnicode_READ(kind, data, i)) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A str as a quoted JSON string. */
static int add_json_str(Buffer *b, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) {
        decline("not a str");
        return -1;
    }
    if (ADD_LITERAL(b, "\"") < 0 || add_json_str_body(b, value) < 0) {
        return -1;
    }
    return ADD_LITERAL(b, "\"");
}

/* ---------------------------------------------------------------- plain (Latin-1 text) */

static int add_latin1_str(Buffer *b, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) {
        decline("not a str");
        return -1;
    }
    if (PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND) {
        decline("text beyond Latin-1");
        return -1;
    }
    return buffer_add(b, (const char *)PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value));
}

static int add_raw_bytes(Buffer *b, PyObject *value) {
    if (!PyBytes_CheckExact(value)) {
        decline("not bytes");
        return -1;
    }
    return buffer_add(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
}

/* ---------------------------------------------------------------- shared fields */

/* The scope keys, interned once (their hashes cached): looking one up is a probe, not a string to make. */
static PyObject *KEY_CLIENT, *KEY_METHOD, *KEY_RAW_PATH, *KEY_QUERY_STRING, *KEY_HTTP_VERSION, *KEY_STATE,
    *KEY_REQUEST_ID, *DEFAULT_METHOD;

/* scope[key], borrowed; NULL (declined) when missing. */
static PyObject *scope_item(PyObject *scope, PyObject *key) {
    PyObject *value = PyDict_GetItemWithError(scope, key);
    if (value == NULL) {
        PyErr_Clear();
        decline("scope key missing");
    }
    return value;
}

/* scope.get("method", "GET") (WebSocket scopes have none), borrowed; NULL on an error in the lookup. */
static PyObject *scope_method(PyObject *scope) {
    PyObject *method = PyDict_GetItemWithError(scope, KEY_METHOD);
    if (method == NULL && !PyErr_Occurred()) {
        method = DEFAULT_METHOD;
    }
    return method;
}

/* client: (host, port) as "host:port"; 0 on success, 1 for None, -1 declined. */
static int add_client(Buffer *b, PyObject *client, int as_json) {
    if (client == Py_None) {
        return 1;
    }
    if (!PyTuple_CheckExact(client) || PyTuple_GET_SIZE(client) != 2) {
        decline("client is not a pair");
        return -1;
    }
    PyObject *host = PyTuple_GET_ITEM(client, 0);
    PyObject *port = PyTuple_GET_ITEM(client, 1);
    if (!PyUnicode_CheckExact(host)) {
        decline("client host is not a str");
        return -1;
    }
    if (as_json) {
        if (ADD_LITERAL(b, "\"") < 0 || add_json_str_body(b, host) < 0 || ADD_LITERAL(b, ":") < 0 ||
            add_int(b, port) < 0 || ADD_LITERAL(b, "\"") < 0) {
            return -1;
        }
        return 0;
    }
    if (add_latin1_str(b, host) < 0 || ADD_LITERAL(b, ":") < 0 || add_int(b, port) < 0) {
        return -1;
    }
    return 0;
}

/* The duration in milliseconds to `places` decimals, exactly as the Python hook: a request under 100 ms (one
 * decimal) or 1 ms (three) from the rounded count, a longer one as Python formats the float. */
static int add_duration(Buffer *b, double seconds, int places) {
    char text[8];
    if (places == 1) {
        double scaled = seconds * 10000.0 + 0.5;  /* int() of it truncates toward zero, as (long) does */
        if (scaled > -1.0 && scaled < 1000.0) {
            int tenths = (int)scaled;
            if (add_decimal(b, tenths / 10) < 0) {
                return -1;
            }
            text[0] = '.';
            text[1] = (char)('0' + tenths % 10);
            return buffer_add(b, text, 2);
        }
    } else {
        double scaled = seconds * 1000000.0 + 0.5;
        if (scaled > -1.0 && scaled < 1000.0) {
            int thousandths = (int)scaled;
            text[0] = '0';
            text[1] = '.';
            text[2] = (char)('0' + thousandths / 100);
            text[3] = (char)('0' + thousandths / 10 % 10);
            text[4] = (char)('0' + thousandths % 10);
            return buffer_add(b, text, 5);
        }
    }
    char *formatted = PyOS_double_to_string(seconds * 1000.0, 'f', places, 0, NULL);
    if (formatted == NULL) {
        return -1;
    }
    int result = buffer_add(b, formatted, (Py_ssize_t)strlen(formatted));
    PyMem_Free(formatted);
    return result;
}

static PyObject *finish(Buffer *b, int latin1) {
    Py_UCS4 max_char = 127;
    if (latin1) {  /* the canonical form: ASCII text is made as ASCII */
        for (Py_ssize_t i = 0; i < b->len; i++) {
            if ((unsigned char)b->data[i] > 127) {
                max_char = 255;
                break;
            }
        }
    }
    PyObject *line = PyUnicode_New(b->len, max_char);
    if (line != NULL) {
        memcpy(PyUnicode_DATA(line), b->data, (size_t)b->len);
    }
    buffer_free(b);
    return line;
}

/* The default --access-log-json line into b; time_json is the time's JSON text (quoted). 0, or -1 with the
 * error set (TypeError: declined). */
static int build_json(Buffer *b, PyObject *scope, PyObject *status, PyObject *bytes_sent, double seconds,
                      const char *time_json, Py_ssize_t time_len) {
    if (!PyDict_CheckExact(scope)) {
        decline("scope is not a dict");
        return -1;
    }
    PyObject *client, *method, *raw_path, *query, *version, *state, *request_id;
    if ((client = scope_item(scope, KEY_CLIENT)) == NULL || (method = scope_method(scope)) == NULL ||
        (raw_path = scope_item(scope, KEY_RAW_PATH)) == NULL ||
        (query = scope_item(scope, KEY_QUERY_STRING)) == NULL ||
        (version = scope_item(scope, KEY_HTTP_VERSION)) == NULL || (state = scope_item(scope, KEY_STATE)) == NULL) {
        return -1;
    }
    if (!PyDict_CheckExact(state)) {
        decline("state is not a dict");
        return -1;
    }
    if (!PyUnicode_CheckExact(version)) {
        decline("http_version is not a str");
        return -1;
    }
    request_id = PyDict_GetItemWithError(state, KEY_REQUEST_ID);
    if (request_id == NULL && PyErr_Occurred()) {
        return -1;
    }
    int client_state;
    if (ADD_LITERAL(b, "{\"time\":") < 0 || buffer_add(b, time_json, time_len) < 0 ||
        ADD_LITERAL(b, ",\"client\":") < 0 || (client_state = add_client(b, client, 1)) < 0 ||
        (client_state == 1 && ADD_LITERAL(b, "null") < 0) || ADD_LITERAL(b, ",\"method\":") < 0 ||
        add_json_str(b, method) < 0 || ADD_LITERAL(b, ",\"path\":") < 0 ||
        add_json_bytes(b, raw_path) < 0 || ADD_LITERAL(b, ",\"query\":") < 0 || add_json_bytes(b, query) < 0 ||
        ADD_LITERAL(b, ",\"status\":") < 0 || add_int(b, status) < 0 || ADD_LITERAL(b, ",\"bytes\":") < 0 ||
        add_int(b, bytes_sent) < 0 || ADD_LITERAL(b, ",\"duration_ms\":") < 0 || add_duration(b, seconds, 3) < 0 ||
        ADD_LITERAL(b, ",\"protocol\":\"HTTP/") < 0 || add_json_str_body(b, version) < 0 ||
        ADD_LITERAL(b, "\",\"request_id\":") < 0 ||
        (request_id == NULL || request_id == Py_None ? ADD_LITERAL(b, "null") : add_json_str(b, request_id)) < 0) {
        return -1;
    }
    return ADD_LITERAL(b, "}\n");
}

/* The default --access-log-format line into b,
 * '{time} {client} - "{method} {target} {protocol}" {status} {bytes} {duration_ms:.1f}ms'. */
static int build_plain(Buffer *b, PyObject *scope, PyObject *status, PyObject *bytes_sent, double seconds,
                       const char *time_text, Py_ssize_t time_len) {
    if (!PyDict_CheckExact(scope)) {
        decline("scope is not a dict");
        return -1;
    }
    PyObject *client, *method, *raw_path, *query, *version;
    if ((client = scope_item(scope, KEY_CLIENT)) == NULL || (method = scope_method(scope)) == NULL ||
        (raw_path = scope_item(scope, KEY_RAW_PATH)) == NULL ||
        (query = scope_item(scope, KEY_QUERY_STRING)) == NULL ||
        (version = scope_item(scope, KEY_HTTP_VERSION)) == NULL) {
        return -1;
    }
    if (!PyBytes_CheckExact(query)) {
        decline("query_string is not bytes");
        return -1;
    }
    int client_state;
    if (buffer_add(b, time_text, time_len) < 0 || ADD_LITERAL(b, " ") < 0 ||
        (client_state = add_client(b, client, 0)) < 0 || (client_state == 1 && ADD_LITERAL(b, "-") < 0) ||
        ADD_LITERAL(b, " - \"") < 0 || add_latin1_str(b, method) < 0 || ADD_LITERAL(b, " ") < 0 ||
        add_raw_bytes(b, raw_path) < 0 ||
        (PyBytes_GET_SIZE(query) && (ADD_LITERAL(b, "?") < 0 || add_raw_bytes(b, query) < 0)) ||
        ADD_LITERAL(b, " HTTP/") < 0 || add_latin1_str(b, version) < 0 || ADD_LITERAL(b, "\" ") < 0 ||
        add_int(b, status) < 0 || ADD_LITERAL(b, " ") < 0 || add_int(b, bytes_sent) < 0 ||
        ADD_LITERAL(b, " ") < 0 || add_duration(b, seconds, 1) < 0) {
        return -1;
    }
    return ADD_LITERAL(b, "ms\n");
}

typedef int (*LineBuilder)(Buffer *, PyObject *, PyObject *, PyObject *, double, const char *, Py_ssize_t);

static PyObject *line_of(LineBuilder build, int latin1, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "expected (scope, status, bytes_sent, seconds, time_text)");
        return NULL;
    }
    if (!PyFloat_CheckExact(args[3])) {
        return decline("seconds is not a float");
    }
    if (!PyUnicode_CheckExact(args[4]) || !PyUnicode_IS_ASCII(args[4])) {
        return decline("time text is not ASCII");
    }
    Buffer b;
    buffer_init(&b);
    if (build(&b, args[0], args[1], args[2], PyFloat_AS_DOUBLE(args[3]), (const char *)PyUnicode_1BYTE_DATA(args[4]),
              PyUnicode_GET_LENGTH(args[4])) < 0) {
        buffer_free(&b);
        return NULL;
    }
    return finish(&b, latin1);
}

/* json_line(scope, status, bytes_sent, seconds, time_json): the default --access-log-json line. */
static PyObject *json_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    return line_of(build_json, 0, args, nargs);
}

/* plain_line(scope, status, bytes_sent, seconds, time_text): the default --access-log-format line. */
static PyObject *plain_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    return line_of(build_plain, 1, args, nargs);
}

/* ---------------------------------------------------------------- request ids */

/* 16 hex digits fixed per process, then a 16-digit counter (zonda.proxy seeds both at random). The next id's
 * text is kept whole and its counter half counted up in place, digit by digit as an odometer does: an id is
 * an allocation and a 32-byte copy. The GIL makes each call whole: ids are never repeated, whatever the
 * threads. */
static char id_text[32];

static void write_hex16(char *out, unsigned long long n) {
    for (int i = 15; i >= 0; i--) {
        out[i] = HEX[n & 0xf];
        n >>= 4;
    }
}

static PyObject *next_request_id(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyObject *id = PyUnicode_New(32, 127);
    if (id == NULL) {
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(id), id_text, 32);
    for (int i = 31; i >= 16; i--) {  /* the counter + 1; after ffff...f it wraps to 0000...0 */
        char c = id_text[i];
        if (c == 'f') {
            id_text[i] = '0';
            continue;
        }
        id_text[i] = c == '9' ? 'a' : (char)(c + 1);
        break;
    }
    return id;
}

static PyObject *seed_request_ids(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "seed_request_ids(prefix, counter) takes two ints");
        return NULL;
    }
    unsigned long long prefix = PyLong_AsUnsignedLongLongMask(args[0]);
    unsigned long long counter = PyLong_AsUnsignedLongLongMask(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    write_hex16(id_text, prefix);
    write_hex16(id_text + 16, counter);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- the per-response hook */

/* Hook(as_json, schedule, fallback, failed, clock): the whole per-response access log hook for a default
 * format, one C call per response. It reads the cycle's scope, status, bytes_sent and started_at, keeps the
 * time of day's text (rebuilt at most once a millisecond, as zonda.accesslog._Clock does), and appends the
 * line as UTF-8 to a buffer of its own, which the writer empties with take(). Calls schedule() when a line
 * lands in an empty buffer, fallback(cycle) -> str for a line it declines, failed(cycle, exc) for one that
 * cannot be built at all; it never raises into the response path. clock is time.perf_counter, called only
 * where clock_gettime(CLOCK_MONOTONIC), which perf_counter reads on Linux, is not used. */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    LineBuilder build;
    int as_json;
    PyObject *schedule, *fallback, *failed, *clock;
    CycleLayout layouts[CYCLE_LAYOUTS];  /* the cycle types seen, first come first kept */
    double until;      /* the monotonic reading at which the cached millisecond ends */
    long long second;  /* the wall-clock second `prefix` shows */
    char prefix[32];   /* "YYYY-mm-ddTHH:MM:SS" */
    char time_text[40];  /* '"' prefix ".mmmZ" '"': the JSON text; the plain text is inside the quotes */
    Py_ssize_t time_len;  /* of the plain text */
    Buffer lines;
} HookObject;

static PyObject *NAME_SCOPE, *NAME_STATUS, *NAME_BYTES_SENT, *NAME_STARTED_AT;

/* perf_counter()'s reading where it is clock_gettime(CLOCK_MONOTONIC) (Linux): 0, or -1 where not read. */
static int read_monotonic(double *now) {
#ifdef __linux__
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        *now = (double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;  /* as perf_counter() */
        return 0;
    }
#endif
    (void)now;
    return -1;
}

static int monotonic_now(HookObject *h, double *now) {
    if (read_monotonic(now) == 0) {
        return 0;
    }
    PyObject *reading = PyObject_CallNoArgs(h->clock);
    if (reading == NULL) {
        return -1;
    }
    *now = PyFloat_AsDouble(reading);
    Py_DECREF(reading);
    return *now == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* The time text for this millisecond of the wall clock; `now` is the monotonic reading the line took. */
static void tick(HookObject *h, double now) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    long long second = ms / 1000;
    if (second != h->second) {
        time_t t = (time_t)second;
        struct tm tm;
        gmtime_r(&t, &tm);
        if (strftime(h->prefix, sizeof(h->prefix), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
            h->prefix[0] = '\0';
        }
        h->second = second;
    }
    size_t n = strlen(h->prefix);
    char *out = h->time_text;
    out[0] = '"';
    memcpy(out + 1, h->prefix, n);
    int millis = (int)(ms % 1000);
    out[n + 1] = '.';
    out[n + 2] = (char)('0' + millis / 100);
    out[n + 3] = (char)('0' + millis / 10 % 10);
    out[n + 4] = (char)('0' + millis % 10);
    out[n + 5] = 'Z';
    out[n + 6] = '"';
    h->time_len = (Py_ssize_t)n + 5;
    double wall = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    h->until = now + ((double)(ms + 1) / 1000.0 - wall);
}

/* The current exception, handed to failed(cycle, exc); a failure of that is unraisable. */
static void report_failure(HookObject *h, PyObject *cycle) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    PyObject *result = PyObject_CallFunctionObjArgs(h->failed, cycle, value != NULL ? value : Py_None, NULL);
    if (result == NULL) {
        PyErr_WriteUnraisable(h->failed);
    }
    Py_XDECREF(result);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

/* The line fallback(cycle) builds, appended as UTF-8 (lone surrogates as escapes, as the writer encodes). */
static int add_fallback_line(HookObject *h, PyObject *cycle) {
    PyObject *line = PyObject_CallOneArg(h->fallback, cycle);
    if (line == NULL) {
        return -1;
    }
    if (!PyUnicode_Check(line)) {
        Py_DECREF(line);
        PyErr_SetString(PyExc_TypeError, "the access log line is not a str");
        return -1;
    }
    PyObject *data = PyUnicode_AsEncodedString(line, "utf-8", "backslashreplace");
    Py_DECREF(line);
    if (data == NULL) {
        return -1;
    }
    int result = buffer_add(&h->lines, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return result;
}

static PyObject **const CYCLE_NAMES[4] = {&NAME_SCOPE, &NAME_STATUS, &NAME_BYTES_SENT, &NAME_STARTED_AT};

static int add_line(HookObject *h, PyObject *cycle) {
    double now;
    if (monotonic_now(h, &now) < 0) {
        return -1;
    }
    if (now >= h->until) {
        tick(h, now);
    }
    PyObject *values[4];  /* scope, status, bytes_sent, started_at */
    if (cycle_read(h->layouts, cycle, CYCLE_NAMES, 4, values) < 0) {
        return -1;
    }
    int result = -1;
    if (!PyFloat_CheckExact(values[3])) {
        decline("started_at is not a float");
    } else {
        double seconds = now - PyFloat_AS_DOUBLE(values[3]);
        const char *time_text = h->as_json ? h->time_text : h->time_text + 1;
        Py_ssize_t time_len = h->as_json ? h->time_len + 2 : h->time_len;
        result = h->build(&h->lines, values[0], values[1], values[2], seconds, time_text, time_len);
    }
    for (int i = 0; i < 4; i++) {
        Py_DECREF(values[i]);
    }
    return result;
}

static PyObject *hook_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    HookObject *h = (HookObject *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Hook takes one argument, the finished cycle");
        return NULL;
    }
    PyObject *cycle = args[0];
    Py_ssize_t start = h->lines.len;
    if (add_line(h, cycle) < 0) {
        h->lines.len = start;  /* no half line */
        int added = -1;
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {  /* declined: the line is built in Python */
            PyErr_Clear();
            added = add_fallback_line(h, cycle);
            if (added < 0) {
                h->lines.len = start;
            }
        }
        if (added < 0) {
            report_failure(h, cycle);
        }
    }
    if (start == 0 && h->lines.len > 0) {
        PyObject *result = PyObject_CallNoArgs(h->schedule);
        if (result == NULL) {
            report_failure(h, cycle);
        }
        Py_XDECREF(result);
    }
    Py_RETURN_NONE;
}

static PyObject *hook_take(PyObject *self, PyObject *unused) {
    (void)unused;
    HookObject *h = (HookObject *)self;
    PyObject *data = PyBytes_FromStringAndSize(h->lines.data, h->lines.len);
    if (data == NULL) {
        return NULL;
    }
    h->lines.len = 0;
    if (h->lines.cap > (1 << 20)) {  /* a burst grew it: do not keep the memory */
        buffer_free(&h->lines);
        buffer_init(&h->lines);
    }
    return data;
}

static PyObject *hook_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    int as_json;
    PyObject *schedule, *fallback, *failed, *clock;
    static char *keywords[] = {"as_json", "schedule", "fallback", "failed", "clock", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "pOOOO:Hook", keywords, &as_json, &schedule, &fallback,
                                     &failed, &clock)) {
        return NULL;
    }
    HookObject *h = (HookObject *)type->tp_alloc(type, 0);
    if (h == NULL) {
        return NULL;
    }
    h->vectorcall = hook_call;
    h->as_json = as_json;
    h->build = as_json ? build_json : build_plain;
    h->schedule = Py_NewRef(schedule);
    h->fallback = Py_NewRef(fallback);
    h->failed = Py_NewRef(failed);
    h->clock = Py_NewRef(clock);
    h->until = 0.0;
    h->second = -1;
    h->prefix[0] = '\0';
    buffer_init(&h->lines);  /* no time text yet: until 0 makes the first line tick */
    return (PyObject *)h;
}

static int hook_traverse(PyObject *self, visitproc visit, void *arg) {
    HookObject *h = (HookObject *)self;
    Py_VISIT(h->schedule);
    Py_VISIT(h->fallback);
    Py_VISIT(h->failed);
    Py_VISIT(h->clock);
    for (int i = 0; i < CYCLE_LAYOUTS; i++) {
        Py_VISIT(h->layouts[i].type);
    }
    return 0;
}

static int hook_clear(PyObject *self) {
    HookObject *h = (HookObject *)self;
    Py_CLEAR(h->schedule);
    Py_CLEAR(h->fallback);
    Py_CLEAR(h->failed);
    Py_CLEAR(h->clock);
    for (int i = 0; i < CYCLE_LAYOUTS; i++) {
        Py_CLEAR(h->layouts[i].type);
    }
    return 0;
}

static void hook_dealloc(PyObject *self) {
    HookObject *h = (HookObject *)self;
    PyObject_GC_UnTrack(self);
    hook_clear(self);
    buffer_free(&h->lines);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *hook_pending(PyObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(((HookObject *)self)->lines.len);
}

static PyMethodDef hook_methods[] = {
    {"take", hook_take, METH_NOARGS, "take() -> the lines made since the last take(), as UTF-8 bytes"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hook_getset[] = {
    {"pending", hook_pending, NULL, "bytes of lines waiting for take()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zonda._accesslog.Hook",
    .tp_basicsize = sizeof(HookObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Hook(as_json, schedule, fallback, failed, clock): the default access log line's hook, in C",
    .tp_new = hook_new,
    .tp_dealloc = hook_dealloc,
    .tp_traverse = hook_traverse,
    .tp_clear = hook_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(HookObject, vectorcall),
    .tp_methods = hook_methods,
    .tp_getset = hook_getset,
};

static PyObject *monotonic(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    double now;
    if (read_monotonic(&now) < 0) {
        Py_RETURN_NONE;  /* the hook calls perf_counter itself */
    }
    return PyFloat_FromDouble(now);
}

static PyMethodDef methods[] = {
    {"monotonic", monotonic, METH_NOARGS,
     "monotonic() -> the clock the hook reads in C (perf_counter's), or None where it calls perf_counter"},
    {"next_request_id", next_request_id, METH_NOARGS, "next_request_id() -> a new 32-hex-digit request id"},
    {"seed_request_ids", (PyCFunction)(void (*)(void))seed_request_ids, METH_FASTCALL,
     "seed_request_ids(prefix, counter): the 64-bit halves the following ids start from"},
    {"json_line", (PyCFunction)(void (*)(void))json_line, METH_FASTCALL,
     "json_line(scope, status, bytes_sent, seconds, time_json) -> the default JSON access log line"},
    {"plain_line", (PyCFunction)(void (*)(void))plain_line, METH_FASTCALL,
     "plain_line(scope, status, bytes_sent, seconds, time_text) -> the default plain access log line"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "zonda._accesslog", "The default access log lines, built in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__accesslog(void) {
    for (int c = 0; c < 256; c++) {
        JSON_PLAIN[c] = (unsigned char)json_plain((Py_UCS4)c);
    }
    memset(id_text, '0', sizeof(id_text));  /* until seeded (zonda.proxy seeds at import): hex digits all the same */
    if ((KEY_CLIENT = PyUnicode_InternFromString("client")) == NULL ||
        (KEY_METHOD = PyUnicode_InternFromString("method")) == NULL ||
        (KEY_RAW_PATH = PyUnicode_InternFromString("raw_path")) == NULL ||
        (KEY_QUERY_STRING = PyUnicode_InternFromString("query_string")) == NULL ||
        (KEY_HTTP_VERSION = PyUnicode_InternFromString("http_version")) == NULL ||
        (KEY_STATE = PyUnicode_InternFromString("state")) == NULL ||
        (KEY_REQUEST_ID = PyUnicode_InternFromString("request_id")) == NULL ||
        (DEFAULT_METHOD = PyUnicode_InternFromString("GET")) == NULL ||
        (NAME_SCOPE = PyUnicode_InternFromString("scope")) == NULL ||
        (NAME_STATUS = PyUnicode_InternFromString("status")) == NULL ||
        (NAME_BYTES_SENT = PyUnicode_InternFromString("bytes_sent")) == NULL ||
        (NAME_STARTED_AT = PyUnicode_InternFromString("started_at")) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&HookType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&HookType);
    if (PyModule_AddObject(module, "Hook", (PyObject *)&HookType) < 0) {
        Py_DECREF(&HookType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

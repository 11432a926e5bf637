/* zonda._accesslog: the two default access log lines built in C.
 *
 * An optional accelerator for zonda.accesslog (which has the reference implementation in Python, used when
 * this module is not built, for custom formats, and for any line this code declines). Building a line in
 * Python costs about 10,000 instructions, one to five hundred per field for a dict lookup, a method call or a
 * formatting step; here the whole line costs a few hundred more than the call.
 *
 * Both functions take (scope, status, bytes_sent, duration_seconds, time_text) and return the line, newline
 * included, exactly as the Python hook would build it. Whenever a value is not of the type the common case
 * has (a scope an app replaced, a status that is not an int, text beyond Latin-1 in the plain line ...) they
 * raise TypeError and the caller builds that line in Python instead: this code never has to be right about
 * the unusual case, only to recognise it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

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

/* Latin-1 characters (a bytes object or a one-byte str) into a JSON string's body: runs of plain characters
 * copied whole, the others escaped. */
static int add_json_latin1(Buffer *b, const unsigned char *s, Py_ssize_t size) {
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!JSON_PLAIN[s[i]]) {
            if (buffer_add(b, (const char *)s + start, i - start) < 0 || add_json_char(b, s[i]) < 0) {
                return -1;
            }
            start = i + 1;
        }
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

static int parse_args(PyObject *const *args, Py_ssize_t nargs, double *seconds) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "expected (scope, status, bytes_sent, seconds, time_text)");
        return -1;
    }
    if (!PyDict_CheckExact(args[0])) {
        decline("scope is not a dict");
        return -1;
    }
    if (!PyFloat_CheckExact(args[3])) {
        decline("seconds is not a float");
        return -1;
    }
    *seconds = PyFloat_AS_DOUBLE(args[3]);
    if (!PyUnicode_CheckExact(args[4]) || !PyUnicode_IS_ASCII(args[4])) {
        decline("time text is not ASCII");
        return -1;
    }
    return 0;
}

/* json_line(scope, status, bytes_sent, seconds, time_json): the default --access-log-json line. */
static PyObject *json_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    double seconds;
    if (parse_args(args, nargs, &seconds) < 0) {
        return NULL;
    }
    PyObject *scope = args[0];
    PyObject *client, *method, *raw_path, *query, *version, *state, *request_id;
    if ((client = scope_item(scope, KEY_CLIENT)) == NULL || (method = scope_method(scope)) == NULL ||
        (raw_path = scope_item(scope, KEY_RAW_PATH)) == NULL ||
        (query = scope_item(scope, KEY_QUERY_STRING)) == NULL ||
        (version = scope_item(scope, KEY_HTTP_VERSION)) == NULL || (state = scope_item(scope, KEY_STATE)) == NULL) {
        return NULL;
    }
    if (!PyDict_CheckExact(state)) {
        return decline("state is not a dict");
    }
    request_id = PyDict_GetItemWithError(state, KEY_REQUEST_ID);
    if (request_id == NULL && PyErr_Occurred()) {
        return NULL;
    }
    Buffer b;
    buffer_init(&b);
    int client_state;
    if (ADD_LITERAL(&b, "{\"time\":") < 0 ||
        buffer_add(&b, (const char *)PyUnicode_1BYTE_DATA(args[4]), PyUnicode_GET_LENGTH(args[4])) < 0 ||
        ADD_LITERAL(&b, ",\"client\":") < 0 || (client_state = add_client(&b, client, 1)) < 0 ||
        (client_state == 1 && ADD_LITERAL(&b, "null") < 0) || ADD_LITERAL(&b, ",\"method\":") < 0 ||
        add_json_str(&b, method) < 0 || ADD_LITERAL(&b, ",\"path\":") < 0 ||
        add_json_bytes(&b, raw_path) < 0 || ADD_LITERAL(&b, ",\"query\":") < 0 || add_json_bytes(&b, query) < 0 ||
        ADD_LITERAL(&b, ",\"status\":") < 0 || add_int(&b, args[1]) < 0 || ADD_LITERAL(&b, ",\"bytes\":") < 0 ||
        add_int(&b, args[2]) < 0 || ADD_LITERAL(&b, ",\"duration_ms\":") < 0 || add_duration(&b, seconds, 3) < 0 ||
        ADD_LITERAL(&b, ",\"protocol\":\"HTTP/") < 0) {
        buffer_free(&b);
        return NULL;
    }
    if (!PyUnicode_CheckExact(version)) {
        buffer_free(&b);
        return decline("http_version is not a str");
    }
    if (add_json_str_body(&b, version) < 0 || ADD_LITERAL(&b, "\",\"request_id\":") < 0 ||
        (request_id == NULL || request_id == Py_None ? ADD_LITERAL(&b, "null") : add_json_str(&b, request_id)) < 0 ||
        ADD_LITERAL(&b, "}\n") < 0) {
        buffer_free(&b);
        return NULL;
    }
    return finish(&b, 0);
}

/* plain_line(scope, status, bytes_sent, seconds, time_text): the default --access-log-format line,
 * '{time} {client} - "{method} {target} {protocol}" {status} {bytes} {duration_ms:.1f}ms'. */
static PyObject *plain_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    double seconds;
    if (parse_args(args, nargs, &seconds) < 0) {
        return NULL;
    }
    PyObject *scope = args[0];
    PyObject *client, *method, *raw_path, *query, *version;
    if ((client = scope_item(scope, KEY_CLIENT)) == NULL || (method = scope_method(scope)) == NULL ||
        (raw_path = scope_item(scope, KEY_RAW_PATH)) == NULL ||
        (query = scope_item(scope, KEY_QUERY_STRING)) == NULL ||
        (version = scope_item(scope, KEY_HTTP_VERSION)) == NULL) {
        return NULL;
    }
    if (!PyBytes_CheckExact(query)) {
        return decline("query_string is not bytes");
    }
    Buffer b;
    buffer_init(&b);
    int client_state;
    if (buffer_add(&b, (const char *)PyUnicode_1BYTE_DATA(args[4]), PyUnicode_GET_LENGTH(args[4])) < 0 ||
        ADD_LITERAL(&b, " ") < 0 || (client_state = add_client(&b, client, 0)) < 0 ||
        (client_state == 1 && ADD_LITERAL(&b, "-") < 0) || ADD_LITERAL(&b, " - \"") < 0 ||
        add_latin1_str(&b, method) < 0 || ADD_LITERAL(&b, " ") < 0 ||
        add_raw_bytes(&b, raw_path) < 0 ||
        (PyBytes_GET_SIZE(query) && (ADD_LITERAL(&b, "?") < 0 || add_raw_bytes(&b, query) < 0)) ||
        ADD_LITERAL(&b, " HTTP/") < 0 || add_latin1_str(&b, version) < 0 || ADD_LITERAL(&b, "\" ") < 0 ||
        add_int(&b, args[1]) < 0 || ADD_LITERAL(&b, " ") < 0 || add_int(&b, args[2]) < 0 ||
        ADD_LITERAL(&b, " ") < 0 || add_duration(&b, seconds, 1) < 0 || ADD_LITERAL(&b, "ms\n") < 0) {
        buffer_free(&b);
        return NULL;
    }
    return finish(&b, 1);
}

/* ---------------------------------------------------------------- request ids */

/* 16 hex digits fixed per process, then a 16-digit counter (zonda.proxy seeds both at random). The GIL makes
 * each call whole: ids are never repeated, whatever the threads. */
static unsigned long long id_prefix, id_counter;

static void write_hex16(Py_UCS1 *out, unsigned long long n) {
    for (int i = 15; i >= 0; i--) {
        out[i] = (Py_UCS1)HEX[n & 0xf];
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
    write_hex16(PyUnicode_1BYTE_DATA(id), id_prefix);
    write_hex16(PyUnicode_1BYTE_DATA(id) + 16, id_counter++);
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
    id_prefix = prefix;
    id_counter = counter;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
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
    if ((KEY_CLIENT = PyUnicode_InternFromString("client")) == NULL ||
        (KEY_METHOD = PyUnicode_InternFromString("method")) == NULL ||
        (KEY_RAW_PATH = PyUnicode_InternFromString("raw_path")) == NULL ||
        (KEY_QUERY_STRING = PyUnicode_InternFromString("query_string")) == NULL ||
        (KEY_HTTP_VERSION = PyUnicode_InternFromString("http_version")) == NULL ||
        (KEY_STATE = PyUnicode_InternFromString("state")) == NULL ||
        (KEY_REQUEST_ID = PyUnicode_InternFromString("request_id")) == NULL ||
        (DEFAULT_METHOD = PyUnicode_InternFromString("GET")) == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}

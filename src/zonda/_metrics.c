/* zonda._metrics: the metrics' per-response hook in C.
 *
 * An optional accelerator for zonda.metrics, whose hook in Python is the reference: it is used when this
 * module is not built, and for every response this code passes on. The tally is the same Python structure
 * either way (protocol -> method -> a list of floats, see zonda.metrics.LATENCY), so the flush reads one
 * tally whoever filled it. In Python the hook costs about 2,600 instructions a response (a Python call, a
 * perf_counter() call, four str-keyed dict lookups, three float additions); here about half of that (the
 * clock read and the dict lookups are most of it).
 *
 * Recorder(series, fallback, clock, bounds, latency) is that hook: called with the finished cycle, it adds the
 * response to its series, or, when anything is not as the common case has it (no series yet for the
 * protocol and method, a WebSocket's scope without a method, a status outside 0-999, a scope or an attribute
 * of another type), calls fallback(cycle) to do it in Python: this code never has to be right about the
 * unusual case, only to recognise it. A response is counted by one of the two, whole, never by both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_cycle_slots.h"
#include <stddef.h>
#include <time.h>

#define MAX_BOUNDS 64

static PyObject *NAME_SCOPE, *NAME_STATUS, *NAME_STARTED_AT, *KEY_HTTP_VERSION, *KEY_METHOD;
static PyObject **const CYCLE_NAMES[3] = {&NAME_SCOPE, &NAME_STATUS, &NAME_STARTED_AT};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *series, *fallback, *clock;
    double bounds[MAX_BOUNDS];  /* the latency buckets' upper bounds, ascending, the last +inf */
    Py_ssize_t bound_count;
    Py_ssize_t latency;  /* a series' index of the first bucket's count; the status codes are below it */
    Py_ssize_t size;     /* a series' length: the statuses, the buckets, then the latencies' sum */
    CycleLayout layouts[CYCLE_LAYOUTS];  /* the cycle types seen, first come first kept */
} RecorderObject;

/* perf_counter()'s reading: clock_gettime(CLOCK_MONOTONIC) where that is what it reads (Linux), else clock(). */
static int now_of(RecorderObject *r, double *now) {
#ifdef __linux__
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        *now = (double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;  /* as perf_counter() */
        return 0;
    }
#endif
    PyObject *reading = PyObject_CallNoArgs(r->clock);
    if (reading == NULL) {
        return -1;
    }
    *now = PyFloat_AsDouble(reading);
    Py_DECREF(reading);
    return *now == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* d[key], borrowed, or NULL when missing or not an exact dict; a lookup error (an unhashable key an app put
 * in the scope) counts as missing. */
static PyObject *item_of(PyObject *d, PyObject *key) {
    if (d == NULL || key == NULL || !PyDict_CheckExact(d)) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(d, key);
    if (value == NULL) {
        PyErr_Clear();
    }
    return value;
}

/* counts[index] += amount, the item known to be a float. */
static int add(PyObject *counts, Py_ssize_t index, double amount) {
    PyObject *old = PyList_GET_ITEM(counts, index);
    PyObject *sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(old) + amount);
    if (sum == NULL) {
        return -1;
    }
    PyList_SET_ITEM(counts, index, sum);
    Py_DECREF(old);
    return 0;
}

/* 1: counted; 0: left to the fallback (nothing changed); -1: an error, set. */
static int record(RecorderObject *r, PyObject *cycle) {
    PyObject *values[3];  /* scope, status, started_at */
    if (cycle_read(r->layouts, cycle, CYCLE_NAMES, 3, values) < 0) {
        PyErr_Clear();
        return 0;  /* the fallback meets the same error, and reports it as the Python hook would */
    }
    PyObject *scope = values[0];
    int result = 0;
    if (!PyLong_CheckExact(values[1]) || !PyFloat_CheckExact(values[2])) {
        goto done;
    }
    long status = PyLong_AsLong(values[1]);
    if (status < 0 || status >= r->latency) {
        PyErr_Clear();  /* an overflow */
        goto done;
    }
    PyObject *methods = item_of(r->series, item_of(scope, KEY_HTTP_VERSION));
    PyObject *counts = item_of(methods, item_of(scope, KEY_METHOD));  /* a WebSocket's scope has no method */
    if (counts == NULL || !PyList_CheckExact(counts) || PyList_GET_SIZE(counts) != r->size) {
        goto done;
    }
    double now;
    if (now_of(r, &now) < 0) {
        result = -1;
        goto done;
    }
    double elapsed = now - PyFloat_AS_DOUBLE(values[2]);
    Py_ssize_t bucket = -1;  /* the first bucket's count is worked out at flush time */
    if (elapsed > r->bounds[0]) {
        Py_ssize_t i = 1;
        while (i < r->bound_count - 1 && elapsed > r->bounds[i]) {
            i++;
        }
        bucket = r->latency + i;
    }
    Py_ssize_t last = r->size - 1;
    if (!PyFloat_CheckExact(PyList_GET_ITEM(counts, status)) ||
        !PyFloat_CheckExact(PyList_GET_ITEM(counts, last)) ||
        (bucket >= 0 && !PyFloat_CheckExact(PyList_GET_ITEM(counts, bucket)))) {
        goto done;
    }
    if (add(counts, status, 1.0) < 0 || (bucket >= 0 && add(counts, bucket, 1.0) < 0) ||
        add(counts, last, elapsed) < 0) {
        result = -1;  /* out of memory for a float */
        goto done;
    }
    result = 1;
done:
    for (int i = 0; i < 3; i++) {
        Py_DECREF(values[i]);
    }
    return result;
}

static PyObject *recorder_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    RecorderObject *r = (RecorderObject *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Recorder takes one argument, the finished cycle");
        return NULL;
    }
    int counted = record(r, args[0]);
    if (counted < 0) {
        return NULL;
    }
    if (counted == 0) {
        return PyObject_CallOneArg(r->fallback, args[0]);
    }
    Py_RETURN_NONE;
}

static PyObject *recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *series, *fallback, *clock, *bounds;
    Py_ssize_t latency;
    static char *keywords[] = {"series", "fallback", "clock", "bounds", "latency", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO!n:Recorder", keywords, &PyDict_Type, &series,
                                     &fallback, &clock, &PyTuple_Type, &bounds, &latency)) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(bounds);
    if (count < 2 || count > MAX_BOUNDS || latency < 1) {
        PyErr_SetString(PyExc_ValueError, "Recorder: 2 to 64 bounds, and a positive latency index");
        return NULL;
    }
    RecorderObject *r = (RecorderObject *)type->tp_alloc(type, 0);
    if (r == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        r->bounds[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (r->bounds[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(r);
            return NULL;
        }
    }
    r->vectorcall = recorder_call;
    r->bound_count = count;
    r->latency = latency;
    r->size = latency + count + 1;
    r->series = Py_NewRef(series);
    r->fallback = Py_NewRef(fallback);
    r->clock = Py_NewRef(clock);
    return (PyObject *)r;
}

static int recorder_traverse(PyObject *self, visitproc visit, void *arg) {
    RecorderObject *r = (RecorderObject *)self;
    Py_VISIT(r->series);
    Py_VISIT(r->fallback);
    Py_VISIT(r->clock);
    for (int i = 0; i < CYCLE_LAYOUTS; i++) {
        Py_VISIT(r->layouts[i].type);
    }
    return 0;
}

static int recorder_clear(PyObject *self) {
    RecorderObject *r = (RecorderObject *)self;
    Py_CLEAR(r->series);
    Py_CLEAR(r->fallback);
    Py_CLEAR(r->clock);
    for (int i = 0; i < CYCLE_LAYOUTS; i++) {
        Py_CLEAR(r->layouts[i].type);
    }
    return 0;
}

static void recorder_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zonda._metrics.Recorder",
    .tp_basicsize = sizeof(RecorderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Recorder(series, fallback, clock, bounds, latency): the metrics' per-response hook, in C",
    .tp_new = recorder_new,
    .tp_dealloc = recorder_dealloc,
    .tp_traverse = recorder_traverse,
    .tp_clear = recorder_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(RecorderObject, vectorcall),
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "zonda._metrics", "The metrics' per-response hook, in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__metrics(void) {
    if ((NAME_SCOPE = PyUnicode_InternFromString("scope")) == NULL ||
        (NAME_STATUS = PyUnicode_InternFromString("status")) == NULL ||
        (NAME_STARTED_AT = PyUnicode_InternFromString("started_at")) == NULL ||
        (KEY_HTTP_VERSION = PyUnicode_InternFromString("http_version")) == NULL ||
        (KEY_METHOD = PyUnicode_InternFromString("method")) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&RecorderType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&RecorderType);
    if (PyModule_AddObject(module, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(&RecorderType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

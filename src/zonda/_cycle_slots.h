/* Reading a finished cycle's attributes from C, shared by zonda._accesslog and zonda._metrics.
 *
 * Where a cycle type keeps the attributes a hook needs: the offsets of their __slots__ members, or has_slots 0
 * for a type that keeps any of them otherwise (then they are read with getattr). Reading a member slot at its
 * offset is what getattr does for it (a member descriptor is a data descriptor: nothing can shadow it), in
 * 30 instructions instead of 150. A layout is taken once per type, which must not be changed afterwards
 * (zonda's cycle classes never are); a hook keeps CYCLE_LAYOUTS of them, first come first kept.
 *
 * Include after Python.h and structmember.h. */
#ifndef ZONDA_CYCLE_SLOTS_H
#define ZONDA_CYCLE_SLOTS_H

#define CYCLE_LAYOUTS 4
#define CYCLE_MAX_NAMES 4

typedef struct {
    PyTypeObject *type; /* strong reference; NULL: unused */
    int has_slots;
    Py_ssize_t offsets[CYCLE_MAX_NAMES];
} CycleLayout;

static void cycle_find_layout(PyTypeObject *type, PyObject **const *names, int count, CycleLayout *layout) {
    layout->type = (PyTypeObject *)Py_NewRef(type);
    layout->has_slots = 1;
    for (int i = 0; i < count; i++) {
        PyObject *attribute = PyObject_GetAttr((PyObject *)type, *names[i]);
        if (attribute == NULL) {
            PyErr_Clear();
            layout->has_slots = 0;
            return;
        }
        PyMemberDescrObject *member = (PyMemberDescrObject *)attribute;
        if (Py_IS_TYPE(attribute, &PyMemberDescr_Type) && PyType_IsSubtype(type, member->d_common.d_type) &&
            member->d_member->type == T_OBJECT_EX) {
            layout->offsets[i] = member->d_member->offset;
        } else {
            layout->has_slots = 0;
        }
        Py_DECREF(attribute);
        if (!layout->has_slots) {
            return;
        }
    }
}

/* The cycle's attributes ``names`` (``count`` of them, at most CYCLE_MAX_NAMES) as new references in
 * ``values``: 0, or -1 with the error set (an attribute missing) and nothing held. */
static int cycle_read(CycleLayout layouts[CYCLE_LAYOUTS], PyObject *cycle, PyObject **const *names, int count,
                      PyObject **values) {
    PyTypeObject *type = Py_TYPE(cycle);
    CycleLayout *layout = NULL;
    for (int i = 0; i < CYCLE_LAYOUTS; i++) {
        if (layouts[i].type == type) {
            layout = &layouts[i];
            break;
        }
        if (layouts[i].type == NULL) {
            layout = &layouts[i];
            cycle_find_layout(type, names, count, layout);
            break;
        }
    }
    int i = 0;
    if (layout != NULL && layout->has_slots) {
        for (; i < count; i++) {
            PyObject *value = *(PyObject **)((char *)cycle + layout->offsets[i]);
            if (value == NULL) {
                break; /* not set: getattr raises the AttributeError */
            }
            values[i] = Py_NewRef(value);
        }
    }
    for (; i < count; i++) {
        values[i] = PyObject_GetAttr(cycle, *names[i]);
        if (values[i] == NULL) {
            while (i > 0) {
                Py_DECREF(values[--i]);
            }
            return -1;
        }
    }
    return 0;
}

#endif

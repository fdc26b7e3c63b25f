#define _GNU_SOURCE
#include "cring.h"
#include "bench_thread.h"
#include <stdlib.h>
#include <string.h>

/* Layout as in virtio 1.2 §2.7 (and Linux's struct vring_*). */
struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct used_elem { uint32_t id; uint32_t len; };
#define F_WRITE 2
#define USED_F_NO_NOTIFY 1

struct chain { uint64_t token; uint32_t writable; uint16_t count; uint8_t in_flight; };

struct ring {
  uint16_t size, mask;
  struct desc *desc;
  uint16_t *avail;          /* flags, idx, ring[size], used_event */
  uint8_t *used;            /* flags, idx, ring[size] of used_elem, avail_event */
  /* driver private */
  uint16_t *next_free;
  struct chain *chains;
  uint16_t free_head, free_tail, num_free;
  uint16_t avail_idx, last_published, last_used, used_seen;
  int broken;
  char *buffers;            /* payload area the "addresses" point into */
  /* device-side cursors, used only through cring_device_process's local copy */
  uint16_t dev_last_avail, dev_used_idx, dev_last_signalled;
};

static inline uint16_t ld_acq(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline uint16_t ld(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
static inline void st_rel(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void st(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
static inline int need_event(uint16_t ev, uint16_t new, uint16_t old) { return (uint16_t)(new - ev - 1) < (uint16_t)(new - old); }
#define USED_IDX(r) ((uint16_t *)((r)->used + 2))
#define USED_ELEM(r, i) ((struct used_elem *)((r)->used + 4 + 8 * (size_t)(i)))
#define AVAIL_EVENT(r) ((uint16_t *)((r)->used + 4 + 8 * (size_t)(r)->size))
#define USED_EVENT(r) (&(r)->avail[2 + (r)->size])

static void ring_init(struct ring *r, uint16_t size) {
  memset(r, 0, sizeof *r);
  r->size = size; r->mask = size - 1;
  r->desc = aligned_alloc(4096, 16 * (size_t)size);
  r->avail = aligned_alloc(4096, 4096 + 2 * (size_t)size);
  r->used = aligned_alloc(4096, 4096 + 8 * (size_t)size);
  memset(r->desc, 0, 16 * (size_t)size);
  memset(r->avail, 0, 4096 + 2 * (size_t)size);
  memset(r->used, 0, 4096 + 8 * (size_t)size);
  r->next_free = malloc(2 * (size_t)size);
  r->chains = calloc(size, sizeof(struct chain));
  for (uint32_t i = 0; i < size; i++) r->next_free[i] = (uint16_t)((i + 1) % size);
  r->free_head = 0; r->free_tail = size - 1; r->num_free = size;
  r->buffers = calloc(size, 64);
}

static void ring_free(struct ring *r) {
  free(r->desc); free(r->avail); free(r->used); free(r->next_free); free(r->chains); free(r->buffers);
}

/* Driver: one single-descriptor, device-writable buffer. */
static inline int drv_add(struct ring *r, uint64_t addr, uint32_t len, uint64_t token) {
  if (r->num_free == 0) return 0;
  uint16_t head = r->free_head;
  struct desc *d = &r->desc[head];
  d->addr = addr; d->len = len; d->flags = F_WRITE; d->next = 0;
  r->free_head = r->next_free[head];
  r->num_free--;
  r->chains[head] = (struct chain){token, len, 1, 1};
  st(&r->avail[2 + (r->avail_idx & r->mask)], head);
  r->avail_idx++;
  return 1;
}

static inline int drv_publish(struct ring *r) {
  uint16_t new = r->avail_idx, old = r->last_published;
  if (new == old) return 0;
  r->last_published = new;
  st_rel(&r->avail[1], new);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return need_event(ld(AVAIL_EVENT(r)), new, old);
}

/* Returns 1 and fills token/len, 0 if empty, -1 if broken. */
static inline int drv_next_used(struct ring *r, uint64_t *token, uint32_t *len) {
  if (r->broken) return -1;
  if (r->last_used == r->used_seen) {
    uint16_t idx = ld_acq(USED_IDX(r));
    if (idx == r->last_used) return 0;
    if ((uint16_t)(idx - r->last_used) > r->size) { r->broken = 1; return -1; }
    r->used_seen = idx;
  }
  struct used_elem *e = USED_ELEM(r, r->last_used & r->mask);
  uint32_t id = __atomic_load_n(&e->id, __ATOMIC_RELAXED), l = __atomic_load_n(&e->len, __ATOMIC_RELAXED);
  if (id >= r->size) { r->broken = 1; return -1; }
  struct chain c = r->chains[id];
  if (!c.in_flight || l > c.writable) { r->broken = 1; return -1; }
  r->last_used++;
  uint16_t last = (uint16_t)id;
  for (int k = 1; k < c.count; k++) last = r->next_free[last];
  if (r->num_free == 0) r->free_head = (uint16_t)id; else r->next_free[r->free_tail] = (uint16_t)id;
  r->free_tail = last;
  r->num_free += c.count;
  r->chains[id].in_flight = 0;
  *token = c.token; *len = l;
  return 1;
}

/* Device: consume every available chain, write used entries, publish; returns how many. */
static inline uint32_t dev_process(struct ring *r, uint64_t *interrupts) {
  uint16_t avail = ld_acq(&r->avail[1]);
  uint32_t n = 0;
  while (r->dev_last_avail != avail) {
    uint16_t head = ld(&r->avail[2 + (r->dev_last_avail & r->mask)]);
    if (head >= r->size) return n;
    struct desc d = r->desc[head];
    struct used_elem *e = USED_ELEM(r, r->dev_used_idx & r->mask);
    e->id = head; e->len = d.len;
    r->dev_last_avail++; r->dev_used_idx++; n++;
  }
  if (n) {
    st_rel(USED_IDX(r), r->dev_used_idx);
    /* Ask for a kick once the driver passes what we have seen (EVENT_IDX). */
    st(AVAIL_EVENT(r), r->dev_last_avail);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (need_event(ld(USED_EVENT(r)), r->dev_used_idx, r->dev_last_signalled)) (*interrupts)++;
    r->dev_last_signalled = r->dev_used_idx;
  }
  return n;
}

static inline uint64_t now_ns(void) { return bench_now_ns(); }

/* The driver loop both modes share: keep `batch` buffers going per publish, reap all used. */
static inline void drv_round(struct ring *r, uint32_t batch, uint64_t *posted, uint64_t ops, cring_result *res) {
  uint32_t added = 0;
  while (added < batch && *posted < ops && r->num_free > 0) {
    drv_add(r, (uint64_t)(uintptr_t)(r->buffers + 64 * (*posted & r->mask)), 64, *posted);
    (*posted)++; added++;
  }
  if (drv_publish(r)) res->notifications++;
}

static inline void drv_reap(struct ring *r, cring_result *res) {
  uint64_t token; uint32_t len; int rc;
  while ((rc = drv_next_used(r, &token, &len)) == 1) { res->ops++; res->checksum += token + len; }
  if (rc < 0) res->broken = 1;
}

cring_result cring_run_single(uint32_t queue_size, uint32_t batch, uint64_t ops) {
  struct ring r; ring_init(&r, (uint16_t)queue_size);
  cring_device *dev = cring_device_new(r.desc, r.avail, r.used, r.size);
  cring_result res = {0};
  uint64_t posted = 0, t0 = now_ns();
  while (res.ops < ops && !res.broken) {
    drv_round(&r, batch, &posted, ops, &res);
    cring_device_process(dev);
    drv_reap(&r, &res);
  }
  res.nanoseconds = now_ns() - t0;
  res.interrupts = dev->interrupts;
  free(dev);
  ring_free(&r);
  return res;
}

cring_result cring_run_threaded(uint32_t queue_size, uint32_t batch, uint64_t ops, int cpu_driver, int cpu_device) {
  struct ring r; ring_init(&r, (uint16_t)queue_size);
  cring_device *dev = cring_device_new(r.desc, r.avail, r.used, r.size);
  cring_result res = {0};
  bench_pin_self(cpu_driver);
  void *t = cring_device_start(dev, cpu_device);
  uint64_t posted = 0, t0 = now_ns();
  while (res.ops < ops && !res.broken) {
    drv_round(&r, batch, &posted, ops, &res);
    drv_reap(&r, &res);
  }
  res.nanoseconds = now_ns() - t0;
  cring_device_stop(t);
  res.interrupts = dev->interrupts;
  free(dev);
  ring_free(&r);
  return res;
}

cring_device *cring_device_new(void *desc, void *avail, void *used, uint16_t size) {
  /* Own cache lines: the driver thread never writes near the device's state. */
  cring_device *d = aligned_alloc(128, (sizeof(cring_device) + 127) & ~(size_t)127);
  memset(d, 0, sizeof *d);
  d->desc = desc; d->avail = avail; d->used = used; d->size = size;
  return d;
}

__attribute__((noinline)) uint32_t cring_device_process(cring_device *d) {
  struct ring r;
  r.size = d->size; r.mask = d->size - 1;
  r.desc = d->desc; r.avail = d->avail; r.used = d->used;
  r.dev_last_avail = d->last_avail; r.dev_used_idx = d->used_idx; r.dev_last_signalled = d->last_signalled;
  uint32_t n = dev_process(&r, &d->interrupts);
  d->last_avail = r.dev_last_avail; d->used_idx = r.dev_used_idx; d->last_signalled = r.dev_last_signalled;
  return n;
}

static uint32_t split_device_pass(void *d) { return cring_device_process(d); }

void *cring_device_start(cring_device *d, int cpu) { return bench_poller_start(split_device_pass, d, cpu); }
void cring_device_stop(void *handle) { bench_poller_stop(handle); }
void cring_pin_self(int cpu) { bench_pin_self(cpu); }
uint64_t cring_now_ns(void) { return now_ns(); }

#define P_AVAIL (1u << 7)
#define P_USED (1u << 15)
struct pdesc { uint64_t addr; uint32_t len; uint16_t id; uint16_t flags; };

cring_packed_device *cring_packed_device_new(void *ring, void *driver_event, void *device_event, uint16_t size) {
  cring_packed_device *d = aligned_alloc(128, (sizeof(cring_packed_device) + 127) & ~(size_t)127);
  memset(d, 0, sizeof *d);
  d->ring = ring; d->driver_event = driver_event; d->device_event = device_event; d->size = size;
  d->wrap = 1; d->used_wrap = 1;
  return d;
}

uint32_t cring_packed_device_process(cring_packed_device *d) {
  struct pdesc *ring = d->ring;
  uint32_t n = 0;
  uint16_t first_used = d->used_slot; uint8_t first_wrap = d->used_wrap;
  for (;;) {
    struct pdesc *p = &ring[d->slot];
    uint16_t f = ld_acq(&p->flags);
    int avail = (f & P_AVAIL) != 0, used = (f & P_USED) != 0;
    if (avail != d->wrap || used == d->wrap) break;  /* not available in this lap */
    uint16_t id = p->id; uint32_t len = p->len;
    struct pdesc *u = &ring[d->used_slot];
    u->id = id; u->len = len;
    st_rel(&u->flags, d->used_wrap ? (P_AVAIL | P_USED) : 0);
    if (++d->slot == d->size) { d->slot = 0; d->wrap ^= 1; }
    if (++d->used_slot == d->size) { d->used_slot = 0; d->used_wrap ^= 1; }
    n++;
  }
  if (n) {
    uint16_t *dev_ev = d->device_event, *drv_ev = d->driver_event;
    st(&dev_ev[0], (uint16_t)(d->slot | (d->wrap ? 0x8000 : 0)));
    st(&dev_ev[1], 2 /* RING_EVENT_FLAGS_DESC */);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t flags = ld(&drv_ev[1]);
    if (flags == 0) d->interrupts++;
    else if (flags == 2) {
      uint16_t off_wrap = ld(&drv_ev[0]);
      uint16_t ev = off_wrap & 0x7fff;
      if ((off_wrap >> 15) != d->used_wrap) ev = (uint16_t)(ev - d->size);
      uint16_t old = first_used;
      uint16_t new = d->used_slot;
      if (first_wrap != d->used_wrap) old = (uint16_t)(old - d->size);
      if (need_event(ev, new, old)) d->interrupts++;
    }
  }
  return n;
}

static uint32_t packed_device_pass(void *d) { return cring_packed_device_process(d); }

void *cring_packed_device_start(cring_packed_device *d, int cpu) { return bench_poller_start(packed_device_pass, d, cpu); }

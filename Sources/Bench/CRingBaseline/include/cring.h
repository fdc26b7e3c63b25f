/* The C baseline for ring-bench: the same split-ring loop as the Swift driver
 * (FIFO free list, per-head shadow state, used id / length validation, EVENT_IDX
 * publish decision) and the same device loop, in plain C. */
#pragma once
#include <stdint.h>

typedef struct {
  uint64_t ops;            /* buffers completed */
  uint64_t notifications;  /* driver -> device kicks the protocol asked for */
  uint64_t interrupts;     /* device -> driver interrupts the protocol asked for */
  uint64_t nanoseconds;    /* wall time of the measured loop */
  uint64_t checksum;       /* sum of completed tokens, so nothing is optimised away */
  int broken;              /* 1 if validation failed */
} cring_result;

/* Driver on the calling thread, device on a second thread pinned to another CPU
 * (cpu_driver / cpu_device < 0: no pinning). */
cring_result cring_run_threaded(uint32_t queue_size, uint32_t batch, uint64_t ops, int cpu_driver, int cpu_device);
/* Driver and device alternate on the calling thread: add a batch, device
 * consumes it, driver reaps it. Deterministic, for instruction counts. */
cring_result cring_run_single(uint32_t queue_size, uint32_t batch, uint64_t ops);

/* The C device loop over rings someone else laid out (the Swift driver's), so
 * ring-bench can also time the Swift driver against an identical C device. */
typedef struct {
  void *desc; void *avail; void *used; uint16_t size;
  uint16_t last_avail, used_idx, last_signalled;
  uint64_t interrupts;
} cring_device;
/* A device state on its own cache lines (free() it). */
cring_device *cring_device_new(void *desc, void *avail, void *used, uint16_t size);
/* Consumes every available chain, writes used entries (len = descriptor len), publishes. */
uint32_t cring_device_process(cring_device *d);
/* Runs cring_device_process on a pinned thread until cring_device_stop(). */
void *cring_device_start(cring_device *d, int cpu);
void cring_device_stop(void *handle);
/* Pins the calling thread to one CPU (no-op for cpu < 0). */
void cring_pin_self(int cpu);
/* Monotonic clock in nanoseconds. */
uint64_t cring_now_ns(void);

/* A C device for the packed ring (virtio 1.2 §2.8), over rings the Swift driver
 * laid out: consumes single-descriptor buffers in ring order, marks them used
 * in place, and asks for a kick at its next slot (EVENT_IDX, RING_EVENT_FLAGS_DESC). */
typedef struct {
  void *ring; void *driver_event; void *device_event; uint16_t size;
  uint16_t slot; uint8_t wrap;
  uint16_t used_slot; uint8_t used_wrap;
  uint64_t interrupts;
} cring_packed_device;
cring_packed_device *cring_packed_device_new(void *ring, void *driver_event, void *device_event, uint16_t size);
uint32_t cring_packed_device_process(cring_packed_device *d);
void *cring_packed_device_start(cring_packed_device *d, int cpu);

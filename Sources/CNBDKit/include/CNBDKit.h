// BootLab's nbdkit plugin glue. The plugin struct and plugin_init live in C (nbdkit's ABI); each
// callback forwards to a Swift function exported with @_cdecl (declared here, defined in the
// NBDKitPlugin target). nbdkit's variadic and macro APIs are wrapped for Swift below.
#pragma once
#include <stdint.h>

// Implemented in Swift (NBDKitPlugin/Entry.swift).
int bl_swift_config(const char *key, const char *value);
int bl_swift_config_complete(void);
int bl_swift_get_ready(void);
int bl_swift_open(int readonly);
int64_t bl_swift_get_size(void);
int bl_swift_can_write(void);
int bl_swift_pread(void *buf, uint32_t count, uint64_t offset);
int bl_swift_pwrite(const void *buf, uint32_t count, uint64_t offset, int fua);
int bl_swift_flush(void);
int bl_swift_extents(uint32_t count, uint64_t offset, int req_one, void *extents);
void bl_swift_unload(void);
// The filter's configuration is complete (filter.c; Swift: NBDKitPlugin/FilterEntry.swift).
int bl_swift_filter_config_complete(void);

// For Swift: nbdkit calls behind non-variadic signatures.
void bl_nbdkit_error(const char *message, int errnum);
void bl_nbdkit_debug(const char *message);
// type: 0 data, 1 hole+zero (absent), 2 zero. Returns 0 or -1.
int bl_nbdkit_add_extent(void *extents, uint64_t offset, uint64_t length, int type);
// The errno of this thread's last bl_nbdkit_error.
int bl_nbdkit_last_errno(void);

// BootLab as an nbdkit filter over the user's source plugin (filter.c): the parameters passed
// down to the plugin, and the plugin below read through a shared next context opened lazily.
int bl_filter_passed_count(void);
const char *bl_filter_passed_key(int i);
const char *bl_filter_passed_value(int i);
// 0, or -1 with the plugin's error reported to nbdkit.
int bl_filter_source_open(void);
int64_t bl_filter_source_size(void);
// 0, or -1 with *err set.
int bl_filter_source_pread(void *buf, uint32_t count, uint64_t offset, int *err);
// The bound (seconds) on the source plugin's start and on reads of it making no progress: past
// it the filter's watchdog ends the server with a message (default 60).
int bl_filter_set_timeout(double seconds);
void bl_filter_watch_begin(void);
void bl_filter_watch_end(void);

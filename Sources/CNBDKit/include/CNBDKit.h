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

// For Swift: nbdkit calls behind non-variadic signatures.
void bl_nbdkit_error(const char *message, int errnum);
void bl_nbdkit_debug(const char *message);
// type: 0 data, 1 hole+zero (absent), 2 zero. Returns 0 or -1.
int bl_nbdkit_add_extent(void *extents, uint64_t offset, uint64_t length, int type);

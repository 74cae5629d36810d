// Handing back the executable's code pages once start-up is over (docs/decisions/0020).
//
// Why: start-up (argument parsing, configuration, the Swift runtime's first conformance and
// metadata lookups, Foundation pulled in by dependencies) touches about 8 MB of the static
// binary's text, which then stays mapped: half the idle process's resident set, although an
// idle relay runs a small part of it. Those pages are clean copies of the file, so dropping
// their mappings loses nothing: the page cache keeps them, and code that runs again faults its
// page back in (a minor fault, 16 pages at a time with the kernel's fault-around).
#define _GNU_SOURCE
#include "CLinuxShim.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct release_outcome {
    unsigned long advised;
    int error;
};

// True if the object's dynamic section says the loader patched its text (text relocations):
// then its read-only pages are private copies, not the file's, and must be kept.
static int has_text_relocations(const struct dl_phdr_info *info) {
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *phdr = &info->dlpi_phdr[i];
        if (phdr->p_type != PT_DYNAMIC) continue;
        const ElfW(Dyn) *dyn = (const ElfW(Dyn) *)(info->dlpi_addr + phdr->p_vaddr);
        for (; dyn->d_tag != DT_NULL; dyn++) {
            if (dyn->d_tag == DT_TEXTREL) return 1;
            if (dyn->d_tag == DT_FLAGS && (dyn->d_un.d_val & DF_TEXTREL)) return 1;
        }
    }
    return 0;
}

// dl_iterate_phdr visits the main program first; only it is released (libraries are shared
// with every other process, and a static-stdlib build has nearly all its code in the program).
static int release_main_program(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct release_outcome *outcome = data;
    if (has_text_relocations(info)) {
        outcome->error = EPERM;
        return 1;
    }
    const unsigned long page = (unsigned long)sysconf(_SC_PAGESIZE);
    unsigned long relro_start = 0, relro_end = 0;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *phdr = &info->dlpi_phdr[i];
        if (phdr->p_type == PT_GNU_RELRO) {
            relro_start = info->dlpi_addr + phdr->p_vaddr;
            relro_end = relro_start + phdr->p_memsz;
        }
    }
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *phdr = &info->dlpi_phdr[i];
        // Writable segments hold relocated and live data: never. Read-only ones are the file's.
        if (phdr->p_type != PT_LOAD || (phdr->p_flags & PF_W)) continue;
        unsigned long start = info->dlpi_addr + phdr->p_vaddr;
        unsigned long end = start + phdr->p_filesz;
        // RELRO was written by the loader before it became read-only: a segment that holds
        // any of it is kept whole (linkers put RELRO in the writable segment, so this is rare).
        if (relro_end > relro_start && start < relro_end && relro_start < end) continue;
        // Inward to whole pages: a page shared with a neighbouring segment is kept.
        start = (start + page - 1) & ~(page - 1);
        end &= ~(page - 1);
        if (end <= start) continue;
        if (madvise((void *)start, end - start, MADV_DONTNEED) != 0) {
            outcome->error = errno;
            return 1;
        }
        outcome->advised += end - start;
    }
    return 1;
}

long mpx_release_program_text(void) {
    struct release_outcome outcome = {0, 0};
    dl_iterate_phdr(release_main_program, &outcome);
    if (outcome.error != 0) return -outcome.error;
    return (long)outcome.advised;
}

long mpx_resident_bytes(void) {
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char text[128];
    ssize_t length = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (length <= 0) return -1;
    text[length] = '\0';
    unsigned long size = 0, resident = 0;
    if (sscanf(text, "%lu %lu", &size, &resident) != 2) return -1;
    return (long)(resident * (unsigned long)sysconf(_SC_PAGESIZE));
}

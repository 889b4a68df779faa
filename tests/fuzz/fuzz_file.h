/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_file.h - the fuzz targets' input as a file that the code under test opens by path.
 *
 * A memfd (no file on any disk, gone with the process), opened again through
 * /proc/self/fd/N, so fopen(path, "r"/"w"/"a") work as on a real file.  Where memfd_create
 * is missing, a file made with mkstemp in $TMPDIR, removed at exit.  Included by one
 * translation unit per target.
 */
#ifndef FUZZ_FILE_H
#define FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int fuzz_fd = -1;
static char fuzz_path[4096];
static char fuzz_tmp[4096];   /* the mkstemp fallback, removed at exit */

static void fuzz_file_cleanup(void)
{
    if (fuzz_tmp[0])
        unlink(fuzz_tmp);
}

/* Puts size bytes of data in the file; returns its path. */
static const char *fuzz_file(const uint8_t *data, size_t size)
{
    if (fuzz_fd < 0) {
        fuzz_fd = memfd_create("fuzz-input", 0);
        if (fuzz_fd >= 0) {
            snprintf(fuzz_path, sizeof fuzz_path, "/proc/self/fd/%d", fuzz_fd);
        } else {
            const char *dir = getenv("TMPDIR");
            snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/fuzz-input-XXXXXX",
                     dir && *dir ? dir : "/tmp");
            fuzz_fd = mkstemp(fuzz_tmp);
            if (fuzz_fd < 0) {
                perror("fuzz: mkstemp");
                abort();
            }
            atexit(fuzz_file_cleanup);
            snprintf(fuzz_path, sizeof fuzz_path, "%s", fuzz_tmp);
        }
    }
    if (ftruncate(fuzz_fd, 0) != 0) {
        perror("fuzz: ftruncate");
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(fuzz_fd, data + off, size - off, (off_t)off);
        if (w <= 0) {
            perror("fuzz: pwrite");
            abort();
        }
        off += (size_t)w;
    }
    return fuzz_path;
}

/* The whole file as a NUL-terminated string (malloc'ed); *len its length. */
static char *fuzz_file_read(size_t *len)
{
    off_t end = lseek(fuzz_fd, 0, SEEK_END);
    if (end < 0)
        abort();
    char *s = malloc((size_t)end + 1);
    if (s == NULL)
        abort();
    size_t off = 0;
    while (off < (size_t)end) {
        ssize_t r = pread(fuzz_fd, s + off, (size_t)end - off, (off_t)off);
        if (r <= 0)
            abort();
        off += (size_t)r;
    }
    s[end] = '\0';
    *len = (size_t)end;
    return s;
}

#endif

/* The console's page, style and script, compiled into the binary from gateway/console/ (see
 * gateway/console/embed.cmake), so that the console needs no files on disk. */
#ifndef DWB_CONSOLE_ASSETS_H
#define DWB_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct dwb_console_asset {
    const char *name;         /* "index.html", "console.css", "console.js" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
} dwb_console_asset;

/* NULL when there is no asset of that name. */
const dwb_console_asset *dwb_console_asset_find(const char *name);

#endif

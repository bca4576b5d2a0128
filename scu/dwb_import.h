/* dicomweb-bridge import: pulls studies or series from an upstream store (QIDO-RS + WADO-RS) into a
 * destination (C-STORE), stamped, one series per burst, with progress, a resume state file and --dry-run. */
#ifndef DWB_IMPORT_H
#define DWB_IMPORT_H

#ifdef __cplusplus
extern "C" {
#endif

/* argv after "import"; returns the process exit status. */
int dwb_import_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif

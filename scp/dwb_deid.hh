/* Internal to scp/ (C++, DCMTK types): applies an upstream's de-identification profile (translate/dwb_deid.h)
 * to a received instance, attribute by attribute and through every sequence item, before it is spooled. */
#ifndef DWB_DEID_HH
#define DWB_DEID_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcfilefo.h"

#include <string>

extern "C" {
#include "dwb_deid.h"
}

/* De-identifies ff in place: the data set by the profile, then Patient Identity Removed, De-identification Method
 * and its code sequence, and the file meta's Media Storage SOP Instance UID set to the new SOP Instance UID.
 * False with why when a value cannot be mapped (the instance must not be spooled then). */
bool dwb_deid_apply(DcmFileFormat &ff, const dwb_deid_profile *p, std::string &why);

/* The text of De-identification Method (0012,0063): one value per part, each within LO's 64 characters. */
std::string dwb_deid_method_text(unsigned options);

#endif

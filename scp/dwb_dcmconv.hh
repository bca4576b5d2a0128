/* Internal to scp/ (C++, DCMTK types): converts DCMTK data sets to and from dwb_attrs, the C currency of
 * the translate layer, and handles the character set of C-FIND identifiers and responses. */
#ifndef DWB_DCMCONV_HH
#define DWB_DCMCONV_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcdatset.h"

#include <string>

extern "C" {
#include "dwb_attrs.h"
#include "dwb_status.h"
}

/* Converts the data set to UTF-8 (from its SpecificCharacterSet) and copies it into out. Values that are not
 * valid UTF-8 after conversion (an SCU that sends Latin-1 without declaring it) are read as ISO 8859-1.
 * On failure err names the attribute. Bulk (OB/OW/UN...) values are copied as bytes. */
dwb_status dwb_dcm_to_attrs(DcmDataset *ds, dwb_attrs *out, dwb_error *err);
/* Copies an item (no charset conversion). depth guards against hostile nesting. */
dwb_status dwb_item_to_attrs(DcmItem *item, dwb_attrs *out, int depth, dwb_error *err);

/* Builds DCMTK elements from a (UTF-8) attribute list into item. */
dwb_status dwb_attrs_to_item(const dwb_attrs *a, DcmItem *item, dwb_error *err);

/* Sets the response's character set: the request's when every value fits it, else ISO_IR 192. A request
 * without SpecificCharacterSet gets none back when all values are ASCII. ds must be UTF-8 (ISO_IR 192). */
void dwb_dcm_answer_charset(DcmDataset *ds, const std::string &request_charset);

#endif

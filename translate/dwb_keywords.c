/* Keyword table for the attributes the bridge's users and stores name. The keywords are PS3.6's; a unit test
 * checks every row against DCMTK's data dictionary. */
#include "dwb_keywords.h"

#include <stdio.h>
#include <string.h>

#include "dwb_attrs.h"

typedef struct keyword_entry {
    uint32_t tag;
    const char *keyword;
} keyword_entry;

static const keyword_entry k_keywords[] = {
    {DWB_TAG(0x0008, 0x0005), "SpecificCharacterSet"},
    {DWB_TAG(0x0008, 0x0008), "ImageType"},
    {DWB_TAG(0x0008, 0x0016), "SOPClassUID"},
    {DWB_TAG(0x0008, 0x0018), "SOPInstanceUID"},
    {DWB_TAG(0x0008, 0x0020), "StudyDate"},
    {DWB_TAG(0x0008, 0x0021), "SeriesDate"},
    {DWB_TAG(0x0008, 0x0022), "AcquisitionDate"},
    {DWB_TAG(0x0008, 0x0023), "ContentDate"},
    {DWB_TAG(0x0008, 0x0030), "StudyTime"},
    {DWB_TAG(0x0008, 0x0031), "SeriesTime"},
    {DWB_TAG(0x0008, 0x0032), "AcquisitionTime"},
    {DWB_TAG(0x0008, 0x0033), "ContentTime"},
    {DWB_TAG(0x0008, 0x0050), "AccessionNumber"},
    {DWB_TAG(0x0008, 0x0051), "IssuerOfAccessionNumberSequence"},
    {DWB_TAG(0x0008, 0x0052), "QueryRetrieveLevel"},
    {DWB_TAG(0x0008, 0x0054), "RetrieveAETitle"},
    {DWB_TAG(0x0008, 0x0055), "StationAETitle"},
    {DWB_TAG(0x0008, 0x0056), "InstanceAvailability"},
    {DWB_TAG(0x0008, 0x0058), "FailedSOPInstanceUIDList"},
    {DWB_TAG(0x0008, 0x0060), "Modality"},
    {DWB_TAG(0x0008, 0x0061), "ModalitiesInStudy"},
    {DWB_TAG(0x0008, 0x0062), "SOPClassesInStudy"},
    {DWB_TAG(0x0008, 0x0063), "AnatomicRegionsInStudyCodeSequence"},
    {DWB_TAG(0x0008, 0x0070), "Manufacturer"},
    {DWB_TAG(0x0008, 0x0080), "InstitutionName"},
    {DWB_TAG(0x0008, 0x0090), "ReferringPhysicianName"},
    {DWB_TAG(0x0008, 0x0201), "TimezoneOffsetFromUTC"},
    {DWB_TAG(0x0008, 0x1010), "StationName"},
    {DWB_TAG(0x0008, 0x1030), "StudyDescription"},
    {DWB_TAG(0x0008, 0x1032), "ProcedureCodeSequence"},
    {DWB_TAG(0x0008, 0x103E), "SeriesDescription"},
    {DWB_TAG(0x0008, 0x1050), "PerformingPhysicianName"},
    {DWB_TAG(0x0008, 0x1060), "NameOfPhysiciansReadingStudy"},
    {DWB_TAG(0x0008, 0x1080), "AdmittingDiagnosesDescription"},
    {DWB_TAG(0x0008, 0x1090), "ManufacturerModelName"},
    {DWB_TAG(0x0008, 0x1190), "RetrieveURL"},
    {DWB_TAG(0x0008, 0x3002), "AvailableTransferSyntaxUID"},
    {DWB_TAG(0x0010, 0x0010), "PatientName"},
    {DWB_TAG(0x0010, 0x0020), "PatientID"},
    {DWB_TAG(0x0010, 0x0021), "IssuerOfPatientID"},
    {DWB_TAG(0x0010, 0x0030), "PatientBirthDate"},
    {DWB_TAG(0x0010, 0x0032), "PatientBirthTime"},
    {DWB_TAG(0x0010, 0x0040), "PatientSex"},
    {DWB_TAG(0x0010, 0x1000), "OtherPatientIDs"},
    {DWB_TAG(0x0010, 0x1001), "OtherPatientNames"},
    {DWB_TAG(0x0010, 0x1002), "OtherPatientIDsSequence"},
    {DWB_TAG(0x0010, 0x1010), "PatientAge"},
    {DWB_TAG(0x0010, 0x1020), "PatientSize"},
    {DWB_TAG(0x0010, 0x1030), "PatientWeight"},
    {DWB_TAG(0x0010, 0x2160), "EthnicGroup"},
    {DWB_TAG(0x0010, 0x2180), "Occupation"},
    {DWB_TAG(0x0010, 0x21B0), "AdditionalPatientHistory"},
    {DWB_TAG(0x0010, 0x4000), "PatientComments"},
    {DWB_TAG(0x0018, 0x0015), "BodyPartExamined"},
    {DWB_TAG(0x0018, 0x1030), "ProtocolName"},
    {DWB_TAG(0x0020, 0x000D), "StudyInstanceUID"},
    {DWB_TAG(0x0020, 0x000E), "SeriesInstanceUID"},
    {DWB_TAG(0x0020, 0x0010), "StudyID"},
    {DWB_TAG(0x0020, 0x0011), "SeriesNumber"},
    {DWB_TAG(0x0020, 0x0012), "AcquisitionNumber"},
    {DWB_TAG(0x0020, 0x0013), "InstanceNumber"},
    {DWB_TAG(0x0020, 0x0052), "FrameOfReferenceUID"},
    {DWB_TAG(0x0020, 0x0060), "Laterality"},
    {DWB_TAG(0x0020, 0x1200), "NumberOfPatientRelatedStudies"},
    {DWB_TAG(0x0020, 0x1202), "NumberOfPatientRelatedSeries"},
    {DWB_TAG(0x0020, 0x1204), "NumberOfPatientRelatedInstances"},
    {DWB_TAG(0x0020, 0x1206), "NumberOfStudyRelatedSeries"},
    {DWB_TAG(0x0020, 0x1208), "NumberOfStudyRelatedInstances"},
    {DWB_TAG(0x0020, 0x1209), "NumberOfSeriesRelatedInstances"},
    {DWB_TAG(0x0028, 0x0008), "NumberOfFrames"},
    {DWB_TAG(0x0028, 0x0010), "Rows"},
    {DWB_TAG(0x0028, 0x0011), "Columns"},
    {DWB_TAG(0x0028, 0x0100), "BitsAllocated"},
    {DWB_TAG(0x0032, 0x1032), "RequestingPhysician"},
    {DWB_TAG(0x0032, 0x1060), "RequestedProcedureDescription"},
    {DWB_TAG(0x0040, 0x0244), "PerformedProcedureStepStartDate"},
    {DWB_TAG(0x0040, 0x0245), "PerformedProcedureStepStartTime"},
    {DWB_TAG(0x0040, 0x0275), "RequestAttributesSequence"},
    {DWB_TAG(0x0040, 0xE001), "HL7InstanceIdentifier"},
    {DWB_TAG(0x0040, 0xE025), "WADORSRetrievalSequence"},
    {DWB_TAG(0x0088, 0x0130), "StorageMediaFileSetID"},
    {DWB_TAG(0x0088, 0x0140), "StorageMediaFileSetUID"},
};

#define N_KEYWORDS (sizeof k_keywords / sizeof k_keywords[0])

int dwb_keyword_tag(const char *keyword, uint32_t *tag) {
    for (size_t i = 0; i < N_KEYWORDS; i++)
        if (strcmp(k_keywords[i].keyword, keyword) == 0) {
            *tag = k_keywords[i].tag;
            return 1;
        }
    return 0;
}

const char *dwb_tag_keyword(uint32_t tag) {
    for (size_t i = 0; i < N_KEYWORDS; i++)
        if (k_keywords[i].tag == tag) return k_keywords[i].keyword;
    return NULL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

dwb_status dwb_tag_parse(const char *s, uint32_t *tag, dwb_error *err) {
    if (strlen(s) == 8) {
        uint32_t t = 0;
        int ok = 1;
        for (int i = 0; i < 8 && ok; i++) {
            int h = hexval(s[i]);
            if (h < 0) ok = 0;
            else t = (t << 4) | (uint32_t)h;
        }
        if (ok) {
            *tag = t;
            return DWB_OK;
        }
    }
    if (dwb_keyword_tag(s, tag)) return DWB_OK;
    return dwb_error_set(err, DWB_E_INVALID, "'%.80s' is neither a known keyword nor a tag of 8 hex digits (e.g. 00200010)",
                         s);
}

const char *dwb_keyword_at(size_t i, uint32_t *tag) {
    if (i >= N_KEYWORDS) return NULL;
    *tag = k_keywords[i].tag;
    return k_keywords[i].keyword;
}

-- route-to-dermpacs.lua: Orthanc auto-routing of dermatology photographs to dermpacs.
--
-- Install: copy to /etc/orthanc/ and list it in the Orthanc configuration:
--     "LuaScripts" : [ "/etc/orthanc/route-to-dermpacs.lua" ],
-- and declare dermpacs as a DICOM modality named like DERMPACS_MODALITY below:
--     "DicomModalities" : { "dermpacs" : { "AET" : "DERMAI", "Host" : "10.0.0.5", "Port" : 11112 } }
-- (see deploy/orthanc/orthanc.json). Tested with Orthanc 1.10.1 (Debian 12).
--
-- What it does: every instance Orthanc stores is checked once, in the order received,
-- on Orthanc's Lua event thread (not on the thread that receives the image). A
-- photograph of a SOP class listed in FORWARD_SOP_CLASSES is sent to dermpacs, unless
-- it is something dermpacs made or sent (see IsFromDermpacs): dermpacs stores its DICOM
-- SEG and SR results back into this Orthanc, and those must never go round again.
--
-- How it sends: each forward is an asynchronous Orthanc job (POST
-- /modalities/<name>/store with "Asynchronous": true), so Orthanc keeps receiving while
-- it sends. We do not use the Lua SendToModality(): in Orthanc 1.10 it also runs as a
-- job, but a failed C-STORE there is only logged ("Lua: Unable to send instance") and
-- the job still ends in Success, so a photograph sent while dermpacs is down would be
-- lost without trace. A store job that fails ends in state "Failure" under /jobs
-- (GET /jobs?expand) and can be sent again with POST /jobs/<id>/resubmit.
-- Orthanc keeps only the last "JobsHistorySize" finished jobs: raise it (orthanc.json)
-- so that failures stay visible until someone looks.
--
-- Logging: one line per forwarded instance, naming its SOP Instance UID and the job,
-- never patient data. Instances that are not forwarded are not logged.
--
-- Duplicates: Orthanc 1.10 calls OnStoredInstance also when it receives an instance it
-- already has (answer "AlreadyStored", over DICOM and REST alike), so a photograph sent
-- again is forwarded again; dermpacs must expect repeated SOP Instance UIDs. To have a
-- study analysed again by hand: POST /modalities/dermpacs/store with its Orthanc ID.

------------------------------------------------------------------------------------
-- Settings
------------------------------------------------------------------------------------

-- Name of dermpacs in "DicomModalities" (the symbolic name, not its AE title).
DERMPACS_MODALITY = 'dermpacs'

-- SOP classes that are dermatology photographs, forwarded to dermpacs.
FORWARD_SOP_CLASSES = {
  ['1.2.840.10008.5.1.4.1.1.77.1.4'] = 'VL Photographic Image',
  ['1.2.840.10008.5.1.4.1.1.7']      = 'Secondary Capture Image',
}

-- Segmentations made by someone else (a dermatologist's corrected outline stored from
-- OHIF, say) are forwarded too: dermpacs files them as corrections to learn from (it
-- checks that they segment a photograph it analysed) and never analyses them. Its own
-- SEGs (manufacturer "dermpacs", or stored by dermpacs's AE title) are not forwarded.
-- Set to false to keep corrections in the PACS only (`dermpacs learn collect` can
-- still harvest them by C-FIND/C-GET).
FORWARD_CORRECTIONS = true
CORRECTION_SOP_CLASSES = {
  ['1.2.840.10008.5.1.4.1.1.66.4'] = 'Segmentation',
}

-- Modalities of results: never forwarded, whatever their SOP class (corrections aside).
RESULT_MODALITIES = { SEG = true, SR = true, KO = true, PR = true }

-- Manufacturer written into everything dermpacs creates. Such an instance is taken
-- for a result and not forwarded unless its ImageType says ORIGINAL: the synthetic
-- demo photographs dermpacs generates (dicom/encode.py) carry this manufacturer too,
-- as ORIGINAL\PRIMARY VL photographs, and must still be analysable when uploaded.
RESULT_MANUFACTURERS = { ['dermpacs'] = true }

-- Calling AE titles dermpacs stores results from. The AE title of the
-- DERMPACS_MODALITY entry is always included; add others here if dermpacs calls with
-- a different one. Compared without case, as Orthanc does by default.
EXTRA_DERMPACS_CALLING_AETS = {}

------------------------------------------------------------------------------------

local function Trim(s)
  if s == nil then return '' end
  return (tostring(s):gsub('^%s+', ''):gsub('%s+$', ''))
end

-- AE title of the dermpacs modality, read from Orthanc's configuration each time so
-- that a modality defined through the REST API (DicomModalitiesInDatabase) also works.
local function DermpacsAet()
  local answer = RestApiGet('/modalities?expand', true)
  if answer == nil then return nil end
  local modality = ParseJson(answer)[DERMPACS_MODALITY]
  if modality == nil then return nil end
  return Trim(modality['AET']):upper()
end

local function IsFromDermpacs(tags, metadata, origin)
  -- Sent by dermpacs over DICOM: origin.RemoteAet (metadata.RemoteAET is the same value).
  local caller = origin['RemoteAet'] or metadata['RemoteAET']
  if caller ~= nil and caller ~= '' then
    caller = Trim(caller):upper()
    if caller == DermpacsAet() then return true end
    for _, aet in ipairs(EXTRA_DERMPACS_CALLING_AETS) do
      if caller == Trim(aet):upper() then return true end
    end
  end
  -- A result by its modality or its manufacturer, however it arrived (STOW-RS, upload).
  if RESULT_MODALITIES[Trim(tags['Modality']):upper()] then return true end
  local manufacturer = Trim(tags['Manufacturer']):lower()
  if RESULT_MANUFACTURERS[manufacturer] then
    local imageType = Trim(tags['ImageType']):upper()
    if imageType:sub(1, 8) ~= 'ORIGINAL' then return true end
  end
  return false
end

-- A SEG someone other than dermpacs made: not stored by dermpacs, not its manufacturer.
local function IsCorrection(sopClass, tags, metadata, origin)
  if not FORWARD_CORRECTIONS or CORRECTION_SOP_CLASSES[sopClass] == nil then return false end
  local caller = origin['RemoteAet'] or metadata['RemoteAET']
  if caller ~= nil and caller ~= '' then
    caller = Trim(caller):upper()
    if caller == DermpacsAet() then return false end
    for _, aet in ipairs(EXTRA_DERMPACS_CALLING_AETS) do
      if caller == Trim(aet):upper() then return false end
    end
  end
  return not RESULT_MANUFACTURERS[Trim(tags['Manufacturer']):lower()]
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  -- Instances created by Lua itself (modifications) are never photographs to analyse.
  if origin['RequestOrigin'] == 'Lua' then return end

  local sopClass = Trim(tags['SOPClassUID'] or metadata['SopClassUid'])
  if not IsCorrection(sopClass, tags, metadata, origin) then
    if FORWARD_SOP_CLASSES[sopClass] == nil then return end
    if IsFromDermpacs(tags, metadata, origin) then return end
  end

  if DermpacsAet() == nil then
    print('dermpacs router: no DICOM modality named "' .. DERMPACS_MODALITY ..
          '"; not forwarding SOPInstanceUID ' .. Trim(tags['SOPInstanceUID']))
    return
  end

  local request = DumpJson({ Resources = { instanceId }, Asynchronous = true }, true)
  local answer = RestApiPost('/modalities/' .. DERMPACS_MODALITY .. '/store', request, true)
  local job = '?'
  if answer ~= nil then job = ParseJson(answer)['ID'] or '?' end
  print('dermpacs router: forwarding SOPInstanceUID ' .. Trim(tags['SOPInstanceUID']) ..
        ' to ' .. DERMPACS_MODALITY .. ' (job ' .. job .. ')')
end

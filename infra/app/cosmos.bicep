// The semantic cache: Cosmos DB for NoSQL, serverless (nothing to pay at rest but storage),
// with vector search. The container is created here because the app's data-plane role
// cannot create containers; its policy matches shared/stores/cosmos.py (tests/test_infra.py checks).
param name string
param location string
param tags object
param databaseName string
param containerName string
@description('Length of the vectors the embedding deployment returns (1536 for text-embedding-3-small).')
param embeddingDimensions int
@allowed(['quantizedFlat', 'diskANN'])
param vectorIndexType string = 'quantizedFlat'
@description('Expiry of an entry the gateway stores without its own ttl, in seconds.')
param defaultTtl int
@description('Enabled: reachable over the public endpoint (Entra auth only). Disabled: only through a private endpoint (main.bicep: privateNetworking). Private unless main.bicep says otherwise.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    // One region, one write region (serverless has no other).
    enableMultipleWriteLocations: false
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
      {
        name: 'EnableNoSQLVectorSearch'
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: publicNetworkAccess
  }

  resource database 'sqlDatabases' = {
    name: databaseName
    properties: {
      resource: {
        id: databaseName
      }
    }

    resource container 'containers' = {
      name: containerName
      properties: {
        resource: {
          id: containerName
          partitionKey: {
            paths: [
              '/scope'
            ]
            kind: 'Hash'
            version: 2
          }
          defaultTtl: defaultTtl
          indexingPolicy: {
            indexingMode: 'consistent'
            automatic: true
            includedPaths: [
              {
                path: '/*'
              }
            ]
            excludedPaths: [
              {
                path: '/"_etag"/?'
              }
              {
                path: '/embedding/*'
              }
              {
                path: '/response/?'
              }
            ]
            vectorIndexes: [
              {
                path: '/embedding'
                type: vectorIndexType
              }
            ]
          }
          vectorEmbeddingPolicy: {
            vectorEmbeddings: [
              {
                path: '/embedding'
                dataType: 'float32'
                distanceFunction: 'cosine'
                dimensions: embeddingDimensions
              }
            ]
          }
        }
      }
    }
  }
}

output name string = account.name
output id string = account.id
output endpoint string = account.properties.documentEndpoint
